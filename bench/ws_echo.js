// WebSocket echo load: N connections, each sends a 32-byte text message and its next one
// when the echo arrives. Prints one JSON line: rate (echoes/s), p50/p99 latency (ms), counts.
// usage: node ws_echo.js URL CONNECTIONS SECONDS
'use strict';
const WebSocket = require('ws');

const [url, connections, seconds] = [process.argv[2], +process.argv[3], +process.argv[4]];
const MESSAGE = 'x'.repeat(32);
const latencies = [];
let echoes = 0;
let errors = 0;
let open = 0;
let measuring = false;
let started = 0;

function client() {
  // No compression: the rows compare WebSocket framing, not zlib.
  const ws = new WebSocket(url, { perMessageDeflate: false });
  let sentAt = 0;
  const send = () => { sentAt = process.hrtime.bigint(); ws.send(MESSAGE); };
  ws.on('open', () => { open += 1; send(); });
  ws.on('message', (data) => {
    if (data.length !== 32) errors += 1;
    if (measuring) {
      echoes += 1;
      if (echoes % 16 === 0) latencies.push(Number(process.hrtime.bigint() - sentAt) / 1e6);
    }
    send();
  });
  ws.on('error', () => { errors += 1; });
  return ws;
}

const sockets = [];
for (let i = 0; i < connections; i += 1) sockets.push(client());

const wait = setInterval(() => {
  if (open < connections) return;
  clearInterval(wait);
  measuring = true;
  started = process.hrtime.bigint();
  setTimeout(() => {
    measuring = false;
    const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
    latencies.sort((a, b) => a - b);
    const pct = (p) => (latencies.length ? latencies[Math.floor(p * (latencies.length - 1))] : null);
    console.log(JSON.stringify({
      rate: echoes / elapsed, echoes, errors, open, p50_ms: pct(0.5), p99_ms: pct(0.99),
    }));
    for (const ws of sockets) ws.terminate();
    process.exit(0);
  }, seconds * 1000);
}, 10);
setTimeout(() => { console.log(JSON.stringify({ rate: null, open, errors, echoes: 0 })); process.exit(1); },
  (seconds + 20) * 1000);
