#!/usr/bin/env node
// Plays a live stream in headless Chromium and prints one JSON line: {ok, currentTime,
// totalVideoFrames, errors, ...}. Exit 0 when the video played (currentTime past --min-time and
// decoded frames > 0, no fatal player error) within --timeout-ms. Players (--player):
//   flv     mpegts.js on an FLV URL (http://.../x.flv or ws://.../x.flv), the default
//   hls     hls.js on an .m3u8 URL
//   hls-ll  hls.js in low-latency mode (LL-HLS parts, blocking reload)
//   dash    dash.js on an .mpd URL
//
// Usage: node play.mjs --url URL [--player flv] [--timeout-ms 20000] [--min-time 1.5]
//                      [--cycle-levels]  (hls: once playing, switch to every level in turn and
//                                         record whether its picture size reached the screen)
// Env:   FERROCAST_NODE_TOOLS (default $FERROCAST_TOOLS_DIR/node, else <repo>/.tools/node:
//                              where playwright-core, mpegts.js, hls.js and dashjs are installed)
//        CHROMIUM_PATH        (default /usr/bin/chromium)
//
// The page is served from a throwaway HTTP server on 127.0.0.1 (an http:// origin, so the
// cross-origin fetch of the stream exercises the server's CORS header like a real site does).

import { launch, nodeModuleFile } from './chromium.mjs';
import http from 'node:http';

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const url = arg('--url');
const timeoutMs = Number(arg('--timeout-ms', '20000'));
const minTime = Number(arg('--min-time', '1.5'));
const playerKind = arg('--player', 'flv');
const cycleLevels = process.argv.includes('--cycle-levels');
if (!url) {
  console.error('usage: play.mjs --url URL [--timeout-ms N] [--min-time S]');
  process.exit(2);
}

const libraries = {
  flv: ['mpegts.js', 'dist', 'mpegts.js'],
  hls: ['hls.js', 'dist', 'hls.min.js'],
  'hls-ll': ['hls.js', 'dist', 'hls.min.js'],
  dash: ['dashjs', 'dist', 'modern', 'umd', 'dash.all.min.js'],
};
if (!libraries[playerKind]) {
  console.error(`unknown --player ${playerKind}`);
  process.exit(2);
}
const playerJs = nodeModuleFile(...libraries[playerKind]);

// Whatever happens, never outlive the caller's bound.
const hardStop = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, url, errors: ['play.mjs hard timeout'] }));
  process.exit(3);
}, timeoutMs + 30000);
hardStop.unref();

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>ferrocast play test</title></head>
<body>
<video id="v" muted autoplay playsinline width="640" height="360"></video>
<script src="/player.js"></script>
<script>
  const result = (window.result = { errors: [], mediaInfo: null });
  const url = new URLSearchParams(location.search).get('url');
  const v = document.getElementById('v');
  result.mse = typeof MediaSource !== 'undefined';
  result.h264 = result.mse && MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E"');
  result.aac = result.mse && MediaSource.isTypeSupported('audio/mp4; codecs="mp4a.40.2"');
  v.addEventListener('error', () =>
    result.errors.push('video element error ' + (v.error ? v.error.code + ' ' + v.error.message : '')));
  const kind = new URLSearchParams(location.search).get('player');
  result.player = kind;
  if (kind === 'flv') {
    if (!window.mpegts) {
      result.errors.push('mpegts.js did not load');
    } else if (!mpegts.getFeatureList().mseLivePlayback) {
      result.errors.push('mpegts.js: MSE live playback not supported');
    } else {
      const player = mpegts.createPlayer({ type: 'flv', isLive: true, url }, { enableWorker: false });
      player.on(mpegts.Events.ERROR, (type, detail, info) =>
        result.errors.push('mpegts.js ' + type + ' ' + detail + ' ' + JSON.stringify(info)));
      player.on(mpegts.Events.MEDIA_INFO, (mi) => {
        result.mediaInfo = { mimeType: mi.mimeType, width: mi.width, height: mi.height,
                             videoCodec: mi.videoCodec, audioCodec: mi.audioCodec };
      });
      player.attachMediaElement(v);
      player.load();
      const p = v.play();
      if (p) p.catch((e) => result.errors.push('video.play(): ' + e));
      window.player = player;
    }
  } else if (kind === 'hls' || kind === 'hls-ll') {
    if (!window.Hls || !Hls.isSupported()) {
      result.errors.push('hls.js did not load or MSE is missing');
    } else {
      const hls = new Hls({ lowLatencyMode: kind === 'hls-ll', enableWorker: false });
      result.warnings = [];
      hls.on(Hls.Events.ERROR, (_, d) => {
        const what = 'hls.js ' + d.type + ' ' + d.details + (d.response ? ' ' + d.response.code : '');
        if (d.fatal) result.errors.push(what);
        else if (result.warnings.length < 20) result.warnings.push(what);
      });
      hls.on(Hls.Events.MANIFEST_PARSED, (_, d) => {
        result.levels = d.levels.map((l) => ({ width: l.width, height: l.height, bitrate: l.bitrate }));
      });
      hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
        result.live = d.details.live;
        result.partTarget = d.details.partTarget;
        result.canBlockReload = d.details.canBlockReload;
      });
      // After the merge: a delta update hls.js could not fit onto its copy is counted failed.
      hls.on(Hls.Events.LEVEL_UPDATED, (_, d) => {
        if (d.details.skippedSegments) result.deltaUpdates = (result.deltaUpdates || 0) + 1;
        if (d.details.deltaUpdateFailed) result.deltaUpdatesFailed = (result.deltaUpdatesFailed || 0) + 1;
      });
      hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
        result.fragments = (result.fragments || 0) + 1;
        if (d.part) result.parts = (result.parts || 0) + 1;
      });
      hls.loadSource(url);
      hls.attachMedia(v);
      const p = v.play();
      if (p) p.catch(() => {});
      window.hls = hls;
      setInterval(() => { result.latency = hls.latency; }, 250);
    }
  } else if (kind === 'dash') {
    if (!window.dashjs) {
      result.errors.push('dash.js did not load');
    } else {
      const player = dashjs.MediaPlayer().create();
      player.on(dashjs.MediaPlayer.events.ERROR, (e) =>
        result.errors.push('dash.js ' + JSON.stringify(e.error || e).slice(0, 300)));
      player.initialize(v, url, true);
      window.player = player;
    }
  }
</script>
</body></html>`;

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/player.js')) {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    res.end(playerJs);
  } else if (req.url === '/' || req.url.startsWith('/?')) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  } else if (req.url === '/favicon.ico') {
    res.writeHead(204);
    res.end();
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const pagePort = server.address().port;

let browser;
const out = { ok: false, url, errors: [], console: [] };
try {
  browser = await launch('ferrocast-chromium-');
  const page = browser.page;
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') out.console.push(m.type() + ': ' + m.text());
  });
  page.on('pageerror', (e) => out.console.push('pageerror: ' + e.message));
  await page.goto(`http://127.0.0.1:${pagePort}/?player=${playerKind}&url=${encodeURIComponent(url)}`, {
    timeout: 15000,
  });
  const deadline = Date.now() + timeoutMs;
  let state;
  for (;;) {
    state = await page.evaluate(() => {
      const v = document.getElementById('v');
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
      return {
        currentTime: v.currentTime,
        totalVideoFrames: q.totalVideoFrames || 0,
        droppedVideoFrames: q.droppedVideoFrames || 0,
        readyState: v.readyState,
        paused: v.paused,
        videoWidth: v.videoWidth,
        videoHeight: v.videoHeight,
        ...window.result,
      };
    });
    // hls.js and dash.js report only fatal errors here: stop at the first.
    if (playerKind !== 'flv' && state.errors && state.errors.length > 0) {
      break;
    }
    if (state.currentTime > minTime && state.totalVideoFrames > 0) {
      out.ok = true;
      break;
    }
    if (Date.now() > deadline) {
      out.errors.push(`not playing after ${timeoutMs} ms`);
      break;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  if (out.ok && cycleLevels && playerKind.startsWith('hls')) {
    // hls.js lists levels by bitrate; show each in turn (a switch flushes and loads that
    // level's segments) and wait until its picture size is what the video element shows.
    out.switches = [];
    const n = await page.evaluate(() => window.hls.levels.length);
    for (let i = 0; i < n; i++) {
      const want = await page.evaluate((i) => {
        window.hls.currentLevel = i;
        return window.hls.levels[i].height;
      }, i);
      const until = Date.now() + 20000;
      let shown = false;
      while (Date.now() < until) {
        const h = await page.evaluate(() => document.getElementById('v').videoHeight);
        if (h === want) {
          shown = true;
          break;
        }
        await new Promise((r) => setTimeout(r, 250));
      }
      const t = await page.evaluate(() => document.getElementById('v').currentTime);
      out.switches.push({ level: i, height: want, shown, currentTime: t });
    }
    Object.assign(state, await page.evaluate(() => ({ ...window.result })));
  }
  Object.assign(out, state, { errors: [...out.errors, ...(state.errors || [])] });
} catch (e) {
  out.errors.push(String(e && e.stack ? e.stack : e));
} finally {
  out.console = out.console.slice(-20);
  try {
    if (browser) await browser.close();
  } catch (e) {
    out.errors.push('closing chromium: ' + e);
  }
  server.close();
}
console.log(JSON.stringify(out));
process.exit(out.ok ? 0 : 1);
