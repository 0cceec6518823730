#!/usr/bin/env node
// Publish-to-playback latency of real players in headless Chromium, side by side on one page:
//   ll-hls  hls.js in low-latency mode (LL-HLS parts, blocking reload)
//   hls     hls.js in standard mode (whole segments)
//   flv     mpegts.js on HTTP-FLV with its defaults (no latency chasing)
//   flv-chase  mpegts.js on HTTP-FLV with liveBufferLatencyChasing (what live pages set)
//
// How it is measured:
// - hls.js knows the wall-clock time of the frame on screen (`hls.playingDate`, from the
//   playlist's EXT-X-PROGRAM-DATE-TIME, which the server stamps when a frame reaches it), so
//   for the HLS players latency = now - playingDate.
// - The published video carries its frame number in a bar of 16 black/white blocks drawn on
//   its top 40 rows (latency.sh makes it with ffmpeg's geq). Each sample draws all three videos
//   on canvases in the same tick and reads their frame numbers; the FLV player's latency is
//   the LL-HLS player's minus the frames it is ahead, over the frame rate.
// Both HLS players are also cross-checked the same way (frame numbers against playingDate).
//
// Usage: node latency.mjs --base http://HOST:PORT/APP/NAME [--fps 30] [--warmup-ms 15000]
//                         [--measure-ms 30000]
// Prints one JSON object: per player, latency p50/p90/min/max in ms, and the samples count.

import http from 'node:http';

import { launch, nodeModuleFile } from '../../tests/browser/chromium.mjs';

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const base = arg('--base');
const fps = Number(arg('--fps', '30'));
const warmupMs = Number(arg('--warmup-ms', '15000'));
const measureMs = Number(arg('--measure-ms', '30000'));
if (!base) {
  console.error('usage: latency.mjs --base http://HOST:PORT/APP/NAME');
  process.exit(2);
}

const lib = nodeModuleFile;
const scripts = { '/hls.js': lib('hls.js', 'dist', 'hls.min.js'), '/mpegts.js': lib('mpegts.js', 'dist', 'mpegts.js') };

const hardStop = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, errors: ['latency.mjs hard timeout'] }));
  process.exit(3);
}, warmupMs + measureMs + 90000);
hardStop.unref();

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ferrocast latency</title></head>
<body>
<video id="ll-hls" muted autoplay playsinline width="640" height="360"></video>
<video id="hls" muted autoplay playsinline width="640" height="360"></video>
<video id="flv" muted autoplay playsinline width="640" height="360"></video>
<video id="flv-chase" muted autoplay playsinline width="640" height="360"></video>
<script src="/hls.js"></script>
<script src="/mpegts.js"></script>
<script>
  const base = new URLSearchParams(location.search).get('base');
  window.errors = [];
  window.players = {};
  for (const [id, low] of [['ll-hls', true], ['hls', false]]) {
    const hls = new Hls({ lowLatencyMode: low, enableWorker: false });
    hls.on(Hls.Events.ERROR, (_, d) => { if (d.fatal) errors.push(id + ' ' + d.details); });
    hls.loadSource(base + '/index.m3u8');
    hls.attachMedia(document.getElementById(id));
    window.players[id] = hls;
  }
  for (const [id, chase] of [['flv', false], ['flv-chase', true]]) {
    const flv = mpegts.createPlayer({ type: 'flv', isLive: true, url: base + '.flv' },
                                    { enableWorker: false, liveBufferLatencyChasing: chase });
    flv.on(mpegts.Events.ERROR, (t, d) => errors.push(id + ' ' + t + ' ' + d));
    flv.attachMediaElement(document.getElementById(id));
    flv.load();
  }
  for (const v of document.querySelectorAll('video')) v.play().catch(() => {});
  const canvas = document.createElement('canvas');
  canvas.width = 640; canvas.height = 40;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  // The frame number in the bar of 16 blocks (block k white = bit k set), or null.
  function frameNumber(v) {
    if (v.readyState < 2 || v.videoWidth === 0) return null;
    ctx.drawImage(v, 0, 0, v.videoWidth, 40 * v.videoHeight / 360, 0, 0, 640, 40);
    const row = ctx.getImageData(0, 20, 640, 1).data;
    let n = 0;
    for (let k = 0; k < 16; k++) {
      const i = (k * 40 + 20) * 4;
      if (row[i] + row[i + 1] + row[i + 2] > 3 * 128) n |= 1 << k;
    }
    return n;
  }
  window.sample = () => {
    const now = Date.now();
    const out = { now };
    for (const id of ['ll-hls', 'hls', 'flv', 'flv-chase']) {
      const v = document.getElementById(id);
      out[id] = { frame: frameNumber(v), time: v.currentTime, paused: v.paused };
      const p = window.players[id];
      if (p && p.playingDate) out[id].pdtLatency = now - p.playingDate.getTime();
      if (p) out[id].targetLatency = p.targetLatency;
    }
    return out;
  };
</script>
</body></html>`;

const server = http.createServer((req, res) => {
  if (scripts[req.url]) {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(scripts[req.url]);
  } else if (req.url.startsWith('/?')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));

const out = { ok: false, errors: [], fps };
let browser;
try {
  browser = await launch('ferrocast-latency-');
  const page = browser.page;
  await page.goto(`http://127.0.0.1:${server.address().port}/?base=${encodeURIComponent(base)}`, { timeout: 15000 });
  await new Promise((r) => setTimeout(r, warmupMs));
  const samples = [];
  const end = Date.now() + measureMs;
  while (Date.now() < end) {
    samples.push(await page.evaluate(() => window.sample()));
    await new Promise((r) => setTimeout(r, 250));
  }
  out.errors.push(...(await page.evaluate(() => window.errors)));
  const lat = { 'll-hls': [], hls: [], 'hls-by-frames': [], flv: [], 'flv-chase': [] };
  for (const s of samples) {
    const ll = s['ll-hls'];
    if (ll.pdtLatency !== undefined) lat['ll-hls'].push(ll.pdtLatency);
    if (s.hls.pdtLatency !== undefined) lat.hls.push(s.hls.pdtLatency);
    if (ll.pdtLatency === undefined || ll.frame === null) continue;
    for (const id of ['flv', 'flv-chase']) {
      if (s[id].frame !== null) lat[id].push(ll.pdtLatency - ((s[id].frame - ll.frame) * 1000) / fps);
    }
    if (s.hls.frame !== null) lat['hls-by-frames'].push(ll.pdtLatency - ((s.hls.frame - ll.frame) * 1000) / fps);
  }
  const stats = (xs) => {
    if (xs.length === 0) return null;
    const v = [...xs].sort((a, b) => a - b);
    const q = (p) => Math.round(v[Math.min(v.length - 1, Math.floor(p * v.length))]);
    return { p50: q(0.5), p90: q(0.9), min: Math.round(v[0]), max: Math.round(v[v.length - 1]), samples: v.length };
  };
  out.latencyMs = Object.fromEntries(Object.entries(lat).map(([k, v]) => [k, stats(v)]));
  out.ok = out.errors.length === 0 && Object.values(out.latencyMs).every((x) => x !== null);
  out.lastSample = samples[samples.length - 1];
} catch (e) {
  out.errors.push(String(e && e.stack ? e.stack : e));
} finally {
  try {
    if (browser) await browser.close();
  } catch (e) {
    out.errors.push('closing chromium: ' + e);
  }
  server.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
