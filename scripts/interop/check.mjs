// Standard clients against `pushbench serve`, with no pushbench code on the client side: the
// `eventsource` package (the WHATWG EventSource), `ws` (the WebSocket API), the built-in `fetch`
// for long and short polling, `curl --http2-prior-knowledge` for an event stream multiplexed
// over HTTP/2, Google's Python `grpcio` for gRPC (scripts/interop/grpc_subscribe.py, with the
// Python from scripts/interop/install-grpcio), mosquitto's `mosquitto_sub` (with `mosquitto_pub`
// for its presence) through the embedded MQTT broker, and the `standardwebhooks` reference
// verifier as a webhook consumer. Each must receive the whole stream in order, and the server must then
// exit 0. Every transport that offers compression is checked twice: plain, and with JSON
// payloads compressed (`--compression deflate`:
// permessage-deflate as `ws` offers it, `Content-Encoding: deflate` as fetch and EventSource
// accept it, compressed webhook bodies the consumer decodes before verifying).
//
// The transports come from `pushbench transports --json`, and each is checked with the standard
// client it declares (`interop` in its SPEC); the floor declares none and is skipped. A
// transport that declares none, or one this check does not drive, fails: add it to CLIENTS.
//
// Usage: node scripts/interop/check.mjs PATH/TO/pushbench
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import http from 'node:http';
import zlib from 'node:zlib';
import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { Webhook } from 'standardwebhooks';

const BIN = process.argv[2] ?? 'target/debug/pushbench';
const EVENTS = 500;
const PAYLOAD = 64;
const TIMEOUT_MS = 30_000;

/**
 * Starts `pushbench serve --json` and resolves once it has reported its address (and, for
 * webhooks, the secret and registration token it generated), reading pushbench's typed protocol:
 * one JSON report a line. The consumer here is on loopback, so private targets are allowed.
 */
function serve(transport, extra) {
  const child = spawn(BIN, ['serve', '--transport', transport, '--events', `${EVENTS}`,
    '--payload', `${PAYLOAD}`, '--start-after', '1', '--drain-timeout', '10',
    '--allow-private-targets', '--json', ...extra],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let secret = null;
    let token = null;
    createInterface({ input: child.stdout }).on('line', (line) => {
      const message = JSON.parse(line);
      // The credentials serve made (a webhook provider's signing secret and registration token).
      if (message.report === 'credentials') {
        secret = message.made['webhook-secret'] ?? null;
        token = message.made['registration-token'] ?? null;
      }
      if (message.report === 'listening') resolve({ addr: message.addr, secret, token, exited, child });
    });
    child.on('error', reject);
  });
}

/** Throws unless `events` is the whole stream, in order, with payloads of the right size. */
function checkStream(events) {
  if (events.length !== EVENTS) throw new Error(`received ${events.length} of ${EVENTS} events`);
  events.forEach((event, i) => {
    if (event.seq !== i) throw new Error(`event ${i} has seq ${event.seq}`);
    if (event.payload.length !== PAYLOAD) throw new Error(`event ${i} payload is ${event.payload.length} B`);
  });
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

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
      if (events.length === EVENTS) {
        source.close();
        resolve(events);
      }
    };
  });
}

function viaWebSocket({ addr, path, compressed }) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://${addr}${path}`);
    socket.on('upgrade', (response) => {
      const agreed = response.headers['sec-websocket-extensions'] ?? '';
      if (compressed !== agreed.startsWith('permessage-deflate')) {
        reject(new Error(`extensions agreed: ${JSON.stringify(agreed)}`));
      }
    });
    const events = [];
    socket.on('message', (data, isBinary) => {
      if (isBinary) reject(new Error('binary frame'));
      events.push(JSON.parse(data.toString()));
    });
    socket.on('close', (code) => {
      if (code !== 1000) reject(new Error(`closed with ${code}, expected 1000`));
      resolve(events);
    });
    socket.on('error', reject);
  });
}

async function viaFetch({ addr, path, compressed }) {
  const events = [];
  let after = null;
  for (;;) {
    const url = after === null ? `http://${addr}${path}` : `http://${addr}${path}?after=${after}`;
    const answer = await fetch(url, { headers: { origin: 'http://example.test' } });
    if (answer.status !== 200) throw new Error(`GET ${url}: ${answer.status}`);
    if (!answer.headers.get('access-control-allow-origin')) throw new Error('no CORS header');
    const coding = answer.headers.get('content-encoding');
    if (compressed !== (coding === 'deflate')) throw new Error(`content-encoding ${coding}`);
    const batch = await answer.json();
    events.push(...batch.events);
    if (batch.last_seq !== undefined) after = batch.last_seq;
    if (batch.done) return events;
  }
}

async function viaWebhookConsumer({ addr, secret, token, compressed }) {
  const verifier = new Webhook(secret);
  const events = [];
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
        events.push(verifier.verify(body, request.headers));
        response.writeHead(204).end();
      } catch (error) {
        response.writeHead(401).end(String(error));
        finish(new Error(`verification failed: ${error}`));
        return;
      }
      if (events.length === EVENTS) finish(null);
    });
  });
  await new Promise((resolve) => consumer.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${consumer.address().port}/webhook`;
  const registered = await fetch(`http://${addr}/subscriptions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ url }),
  });
  if (registered.status !== 201) throw new Error(`registration answered ${registered.status}`);
  const failure = await finished;
  consumer.close();
  if (failure) throw failure;
  return events;
}

/**
 * An event stream over HTTP/2 with prior knowledge (h2c) as curl reads it, decoding
 * `Content-Encoding` itself when compressed: the `data:` lines, until the server ends it.
 */
function viaCurlHttp2({ addr, path, compressed }) {
  const args = ['-sSN', '--http2-prior-knowledge', '-H', 'Accept: text/event-stream'];
  if (compressed) args.push('--compressed');
  const curl = spawn('curl', [...args, `http://${addr}${path}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const events = [];
  createInterface({ input: curl.stdout }).on('line', (line) => {
    if (line.startsWith('data: ')) events.push(JSON.parse(line.slice(6)));
  });
  return new Promise((resolve, reject) => {
    curl.on('error', reject);
    curl.on('close', (code) => (code === 0 ? resolve(events) : reject(new Error(`curl exited with ${code}`))));
  });
}

/** Subscribe over gRPC with Google's grpcio (Python), which prints one event a line. */
function viaGrpcio({ addr }) {
  const python = execFileSync('scripts/interop/install-grpcio', { encoding: 'utf8' }).trim();
  const client = spawn(python, ['scripts/interop/grpc_subscribe.py', addr, 'proto'],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  const events = [];
  createInterface({ input: client.stdout }).on('line', (line) => events.push(JSON.parse(line)));
  return new Promise((resolve, reject) => {
    client.on('error', reject);
    client.on('close', (code) => (code === 0 ? resolve(events) : reject(new Error(`grpcio client exited with ${code}`))));
  });
}

/**
 * MQTT with Eclipse Mosquitto's command-line clients: `mosquitto_sub` subscribes to the events
 * topic (its `-d` lines tell when the broker acknowledged), and `mosquitto_pub` sets its
 * retained presence as a pushbench subscriber does: `join`, then `done` once it has every event,
 * then empty (gone) after the server's `bye` came round.
 */
function viaMosquitto({ addr }) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(':')), addr.slice(addr.lastIndexOf(':') + 1)];
  const id = `interop-${process.pid}`;
  const presence = (message) => execFileSync('mosquitto_pub', ['-h', host, '-p', port, '-q', '1',
    '-r', '-t', `pushbench/presence/${id}`, ...(message ? ['-m', message] : ['-n'])]);
  // Line-buffered (coreutils' stdbuf): mosquitto_sub's stdio holds a pipe's lines back, SUBACK's too.
  const sub = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-h', host, '-p', port, '-i', id, '-q', '1', '-d',
    '-t', 'pushbench/events', '-C', `${EVENTS}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const events = [];
  createInterface({ input: sub.stdout }).on('line', (line) => {
    if (line.startsWith('{')) events.push(JSON.parse(line));
    else if (line.includes('SUBACK')) presence('join');
  });
  return new Promise((resolve, reject) => {
    sub.on('error', reject);
    sub.on('close', (code) => {
      if (code !== 0) return reject(new Error(`mosquitto_sub exited with ${code}`));
      presence('done');
      presence(null);
      resolve(events);
    });
  });
}

/** Each standard client this check drives, by the name a transport declares (`interop`). */
const CLIENTS = {
  EventSource: viaEventSource,
  WebSocket: viaWebSocket,
  fetch: viaFetch,
  'standardwebhooks verifier': viaWebhookConsumer,
  'curl --http2-prior-knowledge': viaCurlHttp2,
  'Python grpcio': viaGrpcio,
  mosquitto_sub: viaMosquitto,
};

const declared = JSON.parse(execFileSync(BIN, ['transports', '--json'], { encoding: 'utf8' }));
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
  const receive = CLIENTS[client];
  if (!receive) {
    console.log(`FAILED ${transport}: it declares ${client}, which this check does not drive: add it to CLIENTS`);
    failed += 1;
    continue;
  }
  // The compressed pass, where the transport offers compression.
  const codings = settings.some((s) => s.name === 'compression') ? [false, true] : [false];
  for (const compressed of codings) {
    const extra = compressed ? ['--compression', 'deflate', '--payload-kind', 'json'] : [];
    const label = `${transport}${compressed ? ' compressed' : ''} via ${client}`;
    const server = { ...(await serve(transport, extra)), path, compressed };
    try {
      const events = await withTimeout(receive(server), label);
      checkStream(events);
      const code = await withTimeout(server.exited, `${label}: server exit`);
      if (code !== 0) throw new Error(`server exited with ${code}`);
      console.log(`ok     ${label}: ${events.length} events in order, server exited 0`);
      passed += 1;
    } catch (error) {
      console.log(`FAILED ${label}: ${error.message}`);
      server.child.kill();
      failed += 1;
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
