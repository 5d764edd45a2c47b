// Standard clients against `pushbench serve`, with no pushbench code on the client side: the
// `eventsource` package (the WHATWG EventSource), `ws` (the WebSocket API), the built-in `fetch`
// for long and short polling, `curl --http2-prior-knowledge` for an event stream multiplexed
// over HTTP/2, Google's Python `grpcio` for gRPC (scripts/interop/grpc_subscribe.py, with the
// Python from scripts/interop/install-grpcio), mosquitto's `mosquitto_sub` (with `mosquitto_pub`
// for its presence) through the embedded MQTT broker, and the `standardwebhooks` reference
// verifier as a webhook consumer. Each must receive the whole stream in order and confirm it in
// its transport's idiom (EventSource's reconnect from the last id, answered 204; a close after
// the stream; a final poll or call from the end; the 2xx of every webhook; MQTT's `done`), and
// the server must then exit 0 having heard every confirmation. Every transport that offers
// compression is checked twice: plain, and with JSON
// payloads compressed (`--compression deflate`:
// permessage-deflate as `ws` offers it, `Content-Encoding: deflate` as fetch and EventSource
// accept it, compressed webhook bodies the consumer decodes before verifying).
//
// The transports come from `pushbench transports --json`, and each is checked with the standard
// client it declares (`interop` in its SPEC); the floor declares none and is skipped. A
// transport that declares none, or one this check does not drive, fails: add it to CLIENTS.
//
// Then each client that can resume is checked once more behind a middlebox, `pushbench link
// --link limit_data=N`, which cuts every connection after N bytes toward the subscriber: each
// resumes in its own idiom (EventSource by itself, `ws` from `?after=`, fetch and grpcio from
// the last sequence number, mosquitto_sub's persistent session, the provider's retries), every
// event must arrive, and duplicates appear only where the guarantee allows them (MQTT QoS 1,
// webhooks), counted, cut or not. A cut can also take the answer to a confirmation the server
// has already counted; the server, every subscription confirmed, stops, and the client's next
// try finds nothing there. Such a client says so and passes: the server's own count of
// subscriptions that ended unconfirmed (its stats, which every check reads) is the judge.
//
// Usage: node scripts/interop/check.mjs PATH/TO/pushbench
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import http from 'node:http';
import net from 'node:net';
import zlib from 'node:zlib';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { Webhook } from 'standardwebhooks';
import {
  closeBrowser, viaBrowserEventSource, viaBrowserWebSocket, viaWebTransport,
} from './browser.mjs';

const BIN = process.argv[2] ?? 'target/debug/pushbench';
const EVENTS = 500;
const PAYLOAD = 64;
const TIMEOUT_MS = 30_000;
// How long a server may go without delivering anything before it stops with subscribers left
// (`--drain-timeout`). Longer for the webhook provider, which gives an attempt that gets no
// answer 10 s before it retries: in a CI run, the provider behind the middlebox went 10 s
// without delivering (most likely one such attempt; its log had no more to say), its server
// stopped at the same 10 s, and the consumer never got the rest.
const DRAIN_S = 10;
const DRAIN_S_OF = { 'standardwebhooks verifier': 25 };
/** The ok line's note for a client whose confirmation went unanswered (see the top). */
const UNANSWERED = 'its confirmation unanswered, the server counted it';
// The middlebox cuts each connection after this many bytes toward the subscriber: about 100
// events of the stream's 500, and more than any one poll answer at the stream's rate.
const LIMIT_DATA = 16_384;
// MQTT at QoS 1 needs more: after a reconnect the broker sends its whole window of
// unacknowledged messages (100, about 15 KB) at once, and a cut at 16 KB lands before their
// acknowledgements come back, every time: the session never moves on (Mosquitto as the broker
// does the same). Past the window and its round trip, it does.
const LIMIT_DATA_OF = { mosquitto_sub: 40_000 };
// Transports whose guarantee is at least once: an event may come again, counted (and shown in
// the ok line), not failed. A cut makes it likely; without one it is rare but allowed: a
// fresh-clone CI run saw the embedded broker hand mosquitto_sub the last event twice at QoS 1.
const AT_LEAST_ONCE = new Set(['mosquitto_sub', 'standardwebhooks verifier']);

/**
 * Starts `pushbench serve --json` and resolves once it has reported its address (and, for
 * webhooks, the secret and registration token it generated), reading pushbench's typed protocol:
 * one JSON report a line. The consumer here is on loopback, so private targets are allowed.
 */
function serve(transport, client, extra) {
  const drain = DRAIN_S_OF[client] ?? DRAIN_S;
  const child = spawn(BIN, ['serve', '--transport', transport, '--events', `${EVENTS}`,
    '--payload', `${PAYLOAD}`, '--start-after', '1', '--drain-timeout', `${drain}`,
    '--allow-private-targets', '--json', ...extra],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  let stats = null;
  // 'close', not 'exit': a child's output may still be unread when it exits, and its last
  // line is the stats report (a run of this check read "no stats" from a server that sent them).
  const exited = new Promise((resolve) => child.on('close', (code) => resolve({ code, stats })));
  return new Promise((resolve, reject) => {
    let secret = null;
    let token = null;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const message = JSON.parse(line);
      // The server's last word: what it published, and subscriptions left unconfirmed.
      if (message.report === 'stats') stats = message;
      // The credentials serve made (a webhook provider's signing secret and registration token).
      if (message.report === 'credentials') {
        secret = message.made['webhook-secret'] ?? null;
        token = message.made['registration-token'] ?? null;
      }
      if (message.report === 'listening') {
        resolve({ addr: message.addr, certSha256: message.cert_sha256, secret, token, exited, child });
      }
    });
    child.on('error', reject);
  });
}

/**
 * `pushbench link --json` in front of `to`, cutting every connection after `limit` bytes
 * toward the subscriber (for a server that dials, `serverDials`, the bytes it sends); resolves
 * with its address and a `stop` that ends it.
 */
function middlebox(to, { serverDials = false, limit = LIMIT_DATA } = {}) {
  const child = spawn(BIN, ['link', '--listen', '127.0.0.1:0', '--to', to,
    '--link', `limit_data=${limit}`, '--json', ...(serverDials ? ['--server-dials'] : [])],
  { stdio: ['ignore', 'pipe', 'pipe'] });
  let said = '';
  child.stderr.on('data', (chunk) => { said += chunk; });
  // Once its stderr is read to the end (see `serve`).
  const exited = new Promise((resolve) => child.on('close', () => resolve(said.trim())));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const message = JSON.parse(line);
      if (message.report === 'listening') {
        resolve({ addr: message.addr, stop: () => { child.kill('SIGTERM'); return exited; } });
      }
    });
    child.on('error', reject);
  });
}

/**
 * Throws unless `events` is the whole stream in order, with payloads of the right size; an
 * event received again is allowed only where `repeats` says, and counted. Returns the repeats.
 */
function checkStream(events, repeats = false) {
  let repeated = 0;
  const unique = [];
  for (const event of events) {
    if (unique.length > 0 && event.seq <= unique[unique.length - 1].seq) {
      if (!repeats) throw new Error(`event ${event.seq} arrived again after ${unique[unique.length - 1].seq}`);
      repeated += 1;
      continue;
    }
    unique.push(event);
  }
  if (unique.length !== EVENTS) throw new Error(`received ${unique.length} of ${EVENTS} events`);
  unique.forEach((event, i) => {
    if (event.seq !== i) throw new Error(`event ${i} has seq ${event.seq}`);
    if (event.payload.length !== PAYLOAD) throw new Error(`event ${i} payload is ${event.payload.length} B`);
  });
  return repeated;
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * EventSource as a page uses it: no code of ours on resuming. When a stream ends (or is cut) it
 * reconnects by itself with Last-Event-ID; once it has everything the server answers that with
 * 204, which closes it for good: the confirmation.
 */
function viaEventSource({ addr, path }) {
  return new Promise((resolve, reject) => {
    const source = new EventSource(`http://${addr}${path}`);
    const events = [];
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (message.lastEventId !== String(event.seq)) {
        reject(new Error(`id ${message.lastEventId} carries seq ${event.seq}`));
      }
      events.push(event);
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) resolve(events);
    };
  });
}

/**
 * The WebSocket API with the resume an application adds: a connection that ends without the
 * server's 1000 is opened again from `?after=` the last sequence number received. `ws` answers
 * the server's close frame, the confirmation.
 */
function viaWebSocket({ addr, path, compressed }) {
  const events = [];
  const connect = (resolve, reject) => {
    const after = events.length === 0 ? '' : `?after=${events[events.length - 1].seq}`;
    const socket = new WebSocket(`ws://${addr}${path}${after}`);
    socket.on('upgrade', (response) => {
      const agreed = response.headers['sec-websocket-extensions'] ?? '';
      if (compressed !== agreed.startsWith('permessage-deflate')) {
        reject(new Error(`extensions agreed: ${JSON.stringify(agreed)}`));
      }
    });
    socket.on('message', (data, isBinary) => {
      if (isBinary) reject(new Error('binary frame'));
      events.push(JSON.parse(data.toString()));
    });
    socket.on('close', (code) => {
      if (code === 1000) resolve(events);
      else if (code === 1006) setTimeout(() => connect(resolve, reject), 50);
      else reject(new Error(`closed with ${code}, expected 1000`));
    });
    // A cut shows as an error, then a close (1006), which resumes.
    socket.on('error', () => {});
  };
  return new Promise(connect);
}

/**
 * Polling with fetch: each request from the cursor the last answer left, a failed one (a cut
 * connection) asked again from the same cursor, and once the answer says `done`, one more from
 * the end, answered 204: the confirmation.
 */
async function viaFetch({ addr, path, compressed }) {
  const events = [];
  let after = null;
  let failures = 0;
  for (;;) {
    const url = after === null ? `http://${addr}${path}` : `http://${addr}${path}?after=${after}`;
    let answer;
    let batch;
    try {
      answer = await fetch(url, { headers: { origin: 'http://example.test' } });
      if (answer.status !== 200) throw new Error(`GET ${url}: ${answer.status}`);
      batch = await answer.json();
    } catch (error) {
      // A cut connection fails the request (or its body): ask again, a bounded number of times.
      if (answer?.status !== undefined && answer.status !== 200) throw error;
      failures += 1;
      if (failures > 50) throw new Error(`GET ${url}: ${error.message}, 50 times`);
      await new Promise((resolve) => setTimeout(resolve, 20));
      continue;
    }
    if (!answer.headers.get('access-control-allow-origin')) throw new Error('no CORS header');
    const coding = answer.headers.get('content-encoding');
    if (compressed !== (coding === 'deflate')) throw new Error(`content-encoding ${coding}`);
    events.push(...batch.events);
    if (batch.last_seq !== undefined) after = batch.last_seq;
    if (batch.done) break;
  }
  for (let unanswered = 0; ; unanswered += 1) {
    let last;
    try {
      last = await fetch(`http://${addr}${path}?after=${after}`);
    } catch {
      // Its answer cut, and the server perhaps gone with the stream confirmed (see the top).
      if (unanswered >= 50) return Object.assign(events, { said: UNANSWERED });
      await new Promise((resolve) => setTimeout(resolve, 20));
      continue;
    }
    if (last.status !== 204) throw new Error(`the request from the end answered ${last.status}, expected 204`);
    return events;
  }
}

/**
 * A consumer endpoint that verifies every webhook with the reference verifier. Behind a
 * middlebox (`relay`), the provider reaches it through `pushbench link` and retries a delivery
 * whose answer was cut: the repeat is verified and counted like any other.
 */
async function viaWebhookConsumer({ addr, secret, token, compressed, relay }) {
  const verifier = new Webhook(secret);
  const events = [];
  const seen = new Set();
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const consumer = http.createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => { chunks.push(chunk); });
    request.on('end', () => {
      try {
        // The signature is over the body as it was before compression.
        const coding = request.headers['content-encoding'];
        if (compressed !== (coding === 'deflate')) throw new Error(`content-encoding ${coding}`);
        const raw = Buffer.concat(chunks);
        const body = (coding === 'deflate' ? zlib.inflateSync(raw) : raw).toString();
        const event = verifier.verify(body, request.headers);
        events.push(event);
        seen.add(event.seq);
        response.writeHead(204).end();
      } catch (error) {
        response.writeHead(401).end(String(error));
        finish(new Error(`verification failed: ${error}`));
        return;
      }
      if (seen.size === EVENTS) finish(null);
    });
  });
  await new Promise((resolve) => consumer.listen(0, '127.0.0.1', resolve));
  const consumerAddr = `127.0.0.1:${consumer.address().port}`;
  const link = relay ? await relay(consumerAddr) : null;
  const url = `http://${link?.addr ?? consumerAddr}/webhook`;
  const registered = await fetch(`http://${addr}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ url }),
  });
  if (registered.status !== 201) throw new Error(`registration answered ${registered.status}`);
  const failure = await finished;
  consumer.close();
  // What the link relayed, said beside the result (the check's own links say theirs).
  if (link) events.said = await link.stop();
  if (failure) throw failure;
  return events;
}

/**
 * An event stream over HTTP/2 with prior knowledge (h2c) as curl reads it, decoding
 * `Content-Encoding` itself when compressed: the `data:` lines, until the server ends it. curl
 * is run again with `Last-Event-ID` as an EventSource reconnects, while events are missing (a
 * cut stream), and once more when none are: the server's 204 is the confirmation.
 */
async function viaCurlHttp2({ addr, path, compressed }) {
  const args = ['-sSN', '--http2-prior-knowledge', '-H', 'Accept: text/event-stream'];
  if (compressed) args.push('--compressed');
  const events = [];
  const resumeFrom = () => (events.length === 0 ? [] : ['-H', `Last-Event-ID: ${events[events.length - 1].seq}`]);
  for (let attempt = 0; events.length < EVENTS; attempt += 1) {
    if (attempt > 50) throw new Error(`curl: ${events.length} of ${EVENTS} events after 50 attempts`);
    const curl = spawn('curl', [...args, ...resumeFrom(), `http://${addr}${path}`], { stdio: ['ignore', 'pipe', 'inherit'] });
    // An event counts at its blank line, as EventSource dispatches it: a cut inside one
    // leaves it out, and the next attempt asks for it again.
    let data = null;
    createInterface({ input: curl.stdout }).on('line', (line) => {
      if (line.startsWith('data: ')) data = line.slice(6);
      else if (line === '' && data !== null) {
        events.push(JSON.parse(data));
        data = null;
      }
    });
    await new Promise((resolve, reject) => { curl.on('error', reject); curl.on('close', resolve); });
  }
  for (let attempt = 0; ; attempt += 1) {
    let status;
    try {
      status = execFileSync('curl', ['-s', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_code}',
        ...resumeFrom(), `http://${addr}${path}`], { encoding: 'utf8' });
    } catch {
      // curl failed to get an answer: cut, and the server perhaps gone (see the top).
      if (attempt > 10) return Object.assign(events, { said: UNANSWERED });
      continue;
    }
    if (status === '204') return events;
    if (attempt > 10) throw new Error(`the request from the end answered ${status}, expected 204`);
  }
}

/**
 * Subscribe over gRPC with Google's grpcio (Python), which prints one event a line, calls
 * again from the event after the last when a call fails, and confirms with a call from the end.
 */
function viaGrpcio({ addr }) {
  const python = execFileSync('scripts/interop/install-grpcio', { encoding: 'utf8' }).trim();
  const client = spawn(python, ['scripts/interop/grpc_subscribe.py', addr, 'proto'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const events = [];
  createInterface({ input: client.stdout }).on('line', (line) => {
    const message = JSON.parse(line);
    // Its last line when the confirmation went unanswered (see the top).
    if (message.unanswered) events.said = UNANSWERED;
    else events.push(message);
  });
  return new Promise((resolve, reject) => {
    client.on('error', reject);
    client.on('close', (code) => (code === 0 ? resolve(events) : reject(new Error(`grpcio client exited with ${code}`))));
  });
}

/**
 * MQTT with Eclipse Mosquitto's command-line clients: `mosquitto_sub` subscribes to the events
 * topic (its `-d` lines tell when the broker acknowledged), and `mosquitto_pub` sets its
 * retained presence as a pushbench subscriber does: `join`, then `done` once it has every event,
 * then empty (gone). `done` is what the server waits for: with every subscriber done it says
 * `bye` and stops, so the broker may be gone by the time the empty presence is sent (the more
 * likely behind the middlebox), and then there is nothing left to clear.
 */
async function viaMosquitto({ addr }) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)];
  // The embedded broker binds its port on a thread of its own, and mosquitto_sub does not retry
  // a refused first connection: wait (up to 10 s) until the port accepts one.
  await untilAccepting(host, Number(port), Date.now() + 10_000);
  const id = `interop-${process.pid}-${Date.now()}`;
  const presence = (message) => execFileSync('mosquitto_pub', ['-h', host, '-p', port, '-q', '1',
    '-r', '-t', `pushbench/presence/${id}`, ...(message ? ['-m', message] : ['-n'])]);
  // Line-buffered (coreutils' stdbuf): mosquitto_sub's stdio holds a pipe's lines back, SUBACK's
  // too. A persistent session (-c) at QoS 1: after a cut it reconnects by itself, and the broker
  // sends what it missed (perhaps again).
  const sub = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', host, '-p', port, '-i', id, '-q', '1', '-c', '-d',
    '-t', 'pushbench/events'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const events = [];
  const seen = new Set();
  let joined = false;
  return new Promise((resolve, reject) => {
    createInterface({ input: sub.stdout }).on('line', (line) => {
      if (line.startsWith('{')) {
        const event = JSON.parse(line);
        events.push(event);
        seen.add(event.seq);
        if (seen.size === EVENTS) sub.kill('SIGTERM');
      } else if (line.includes('SUBACK') && !joined) {
        joined = true;
        presence('join');
      }
    });
    sub.on('error', reject);
    sub.on('close', () => {
      if (seen.size !== EVENTS) return reject(new Error(`mosquitto_sub ended with ${seen.size} of ${EVENTS} events`));
      presence('done');
      try {
        presence(null);
      } catch (error) {
        if (!/connection/i.test(String(error.stderr))) return reject(error);
      }
      resolve(events);
    });
  });
}

/** Resolves once `host:port` accepts a TCP connection, trying every 50 ms until `deadline`. */
async function untilAccepting(host, port, deadline) {
  for (;;) {
    const accepted = await new Promise((resolve) => {
      const socket = net.connect({ host, port }, () => { socket.destroy(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (accepted) return;
    if (Date.now() > deadline) throw new Error(`nothing accepted connections at ${host}:${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Each standard client this check drives, by the name a transport declares (`interop`). */
const CLIENTS = {
  EventSource: viaEventSource,
  WebSocket: viaWebSocket,
  WebTransport: (server) => viaWebTransport({ ...server, events: EVENTS }),
  'EventSource in Chromium': viaBrowserEventSource,
  'WebSocket in Chromium': viaBrowserWebSocket,
  fetch: viaFetch,
  'standardwebhooks verifier': viaWebhookConsumer,
  'curl --http2-prior-knowledge': viaCurlHttp2,
  'Python grpcio': viaGrpcio,
  mosquitto_sub: viaMosquitto,
};

/**
 * Serves `transport` and has `client` receive it (behind the middlebox when `cut`): the whole
 * stream, every subscription confirmed, the server exiting 0. Says ok or FAILED; returns which.
 */
async function check({ transport, client, path, extra, compressed, cut }) {
  const receive = CLIENTS[client];
  const limit = LIMIT_DATA_OF[client] ?? LIMIT_DATA;
  const label = `${transport}${compressed ? ' compressed' : ''} via ${client}${cut ? ` behind limit_data=${limit}` : ''}`;
  const server = { ...(await serve(transport, client, extra)), path, compressed };
  let link = null;
  try {
    let reach = server;
    if (cut && client === 'standardwebhooks verifier') {
      reach = { ...server, relay: (consumer) => middlebox(consumer, { serverDials: true, limit }) };
    } else if (cut) {
      link = await middlebox(server.addr, { limit });
      reach = { ...server, addr: link.addr };
    }
    const events = await withTimeout(receive(reach), label);
    const repeated = checkStream(events, AT_LEAST_ONCE.has(client));
    const { code, stats } = await withTimeout(server.exited, `${label}: server exit`);
    if (code !== 0) throw new Error(`server exited with ${code}`);
    if (!stats) throw new Error('the server reported no stats');
    if (stats.unresumed_drops !== 0) {
      throw new Error(`${stats.unresumed_drops} subscription(s) ended without confirming the end`);
    }
    // What the client or the link has to say beside the result.
    const said = [events.said, link ? await link.stop() : null].filter(Boolean);
    const notes = said.map((note) => `; ${note}`).join('');
    console.log(`ok     ${label}: ${EVENTS} events in order${repeated ? ` (${repeated} repeated)` : ''}, confirmed, server exited 0${notes}`);
    return true;
  } catch (error) {
    console.log(`FAILED ${label}: ${error.message}`);
    server.child.kill();
    if (link) await link.stop();
    return false;
  }
}

const declared = JSON.parse(execFileSync(BIN, ['transports', '--json'], { encoding: 'utf8' }));
// Every check is its own server on its own port with its own client: independent, and mostly
// waiting on the stream's schedule, so they run a few at a time.
const checks = [];
let passed = 0;
let failed = 0;
for (const { name: transport, traits, cursor_path: path, settings, interop: client } of declared) {
  if (!client) {
    if (traits.floor) {
      console.log(`skip   ${transport}: the floor speaks no protocol a standard client knows`);
    } else {
      console.log(`FAILED ${transport}: it declares no standard client (its SPEC's interop)`);
      failed += 1;
    }
    continue;
  }
  if (!CLIENTS[client]) {
    console.log(`FAILED ${transport}: it declares ${client}, which this check does not drive: add it to CLIENTS`);
    failed += 1;
    continue;
  }
  // The compressed pass, where the transport offers compression; then the middlebox, plain, at
  // the rate of the example that found a server counting its writes as delivery (it relays
  // TCP: QUIC does not pass through it).
  const codings = settings.some((s) => s.name === 'compression') ? [false, true] : [false];
  const passes = [
    ...codings.map((compressed) => ({
      compressed,
      cut: false,
      extra: compressed ? ['--compression', 'deflate', '--payload-kind', 'json'] : [],
    })),
    ...(traits.udp ? [] : [{ compressed: false, cut: true, extra: ['--rate', '500'] }]),
  ];
  if (traits.udp) console.log(`skip   ${transport} behind limit_data: the middlebox relays TCP, not QUIC`);
  for (const pass of passes) checks.push({ transport, client, path, ...pass });
  // The browser's own API for the transports a page subscribes with, beside the WebTransport
  // page: the same stream, confirmed the same way.
  const inBrowser = `${client} in Chromium`;
  if (CLIENTS[inBrowser]) {
    checks.push({ transport, client: inBrowser, path, compressed: false, cut: false, extra: [] });
  }
}
const AT_ONCE = 4;
const runner = async () => {
  while (checks.length > 0) {
    if (await check(checks.shift())) passed += 1;
    else failed += 1;
  }
};
await Promise.all(Array.from({ length: AT_ONCE }, runner));
await closeBrowser();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
