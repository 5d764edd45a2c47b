// The browser's own push APIs in headless Chromium (Debian's, as scripts/install-chromium puts
// it), driven from check.mjs: WebTransport trusting the server's certificate by its SHA-256
// (`serverCertificateHashes`, as a page given the hash does), EventSource and WebSocket. Each
// runs in a page served from http://127.0.0.1 (a secure context, which WebTransport needs),
// with no pushbench code in it beyond reading the messages, and hands back the events it
// received. CHROMIUM overrides the browser's path.
import http from 'node:http';
import puppeteer from 'puppeteer-core';

// The browser and the blank page's origin, as one promise: checks run side by side, and the
// first to need a page starts them for all.
let started = null;

/** Starts the shared browser and the blank page it opens tabs on. */
async function start() {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const server = http.createServer((_, response) => {
    response.writeHead(200, { 'content-type': 'text/html' });
    response.end('<!doctype html><title>pushbench browser check</title>');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  return { browser, origin: `http://127.0.0.1:${server.address().port}/` };
}

/** A new tab of the shared browser (started on first use) on the blank page. */
async function page() {
  started ??= start();
  const { browser, origin } = await started;
  const tab = await browser.newPage();
  await tab.goto(origin);
  return tab;
}

/** Closes the browser, if one was started. */
export async function closeBrowser() {
  if (started) await (await started).browser.close();
  started = null;
}

/** Runs `receive` in a fresh page with `args`, and closes the page. */
async function inPage(receive, args) {
  const tab = await page();
  try {
    return await tab.evaluate(receive, args);
  } finally {
    await tab.close();
  }
}

/**
 * WebTransport as a page uses it: the session at the server's address (pushbench serves it at
 * /webtransport), its certificate trusted by hash; the server's one stream read as length-prefixed frames (`--webtransport-mode
 * stream`); once the page holds every event it closes the session with code 0, the
 * confirmation.
 */
export function viaWebTransport({ addr, certSha256, events }) {
  return inPage(async ({ url, hash, count }) => {
    const value = new Uint8Array(hash.match(/../g).map((pair) => parseInt(pair, 16)));
    const session = new WebTransport(url, {
      serverCertificateHashes: [{ algorithm: 'sha-256', value }],
    });
    await session.ready;
    const streams = session.incomingUnidirectionalStreams.getReader();
    const { value: stream } = await streams.read();
    const bytes = stream.getReader();
    const decoder = new TextDecoder();
    const received = [];
    let buffer = new Uint8Array(0);
    while (received.length < count) {
      const { value: chunk, done } = await bytes.read();
      if (done) break;
      const joined = new Uint8Array(buffer.length + chunk.length);
      joined.set(buffer);
      joined.set(chunk, buffer.length);
      buffer = joined;
      while (buffer.length >= 4) {
        const length = new DataView(buffer.buffer, buffer.byteOffset, 4).getUint32(0);
        if (buffer.length < 4 + length) break;
        received.push(JSON.parse(decoder.decode(buffer.subarray(4, 4 + length))));
        buffer = buffer.subarray(4 + length);
      }
    }
    session.close({ closeCode: 0, reason: '' });
    await session.closed;
    return received;
  }, { url: `https://${addr}/webtransport`, hash: certSha256, count: events });
}

/**
 * EventSource in the page: it reconnects by itself from the last id; once it has everything the
 * server answers that with 204, which closes it for good: the confirmation.
 */
export function viaBrowserEventSource({ addr, path }) {
  return inPage((url) => new Promise((resolve) => {
    const source = new EventSource(url);
    const received = [];
    source.onmessage = (message) => received.push(JSON.parse(message.data));
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) resolve(received);
    };
  }), `http://${addr}${path}`);
}

/**
 * WebSocket in the page: the server closes with 1000 after the stream, which the browser
 * answers: the confirmation.
 */
export function viaBrowserWebSocket({ addr, path }) {
  return inPage((url) => new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const received = [];
    socket.onmessage = (message) => received.push(JSON.parse(message.data));
    socket.onclose = (close) => {
      if (close.code === 1000) resolve(received);
      else reject(new Error(`closed with ${close.code}, expected 1000`));
    };
  }), `ws://${addr}${path}`);
}
