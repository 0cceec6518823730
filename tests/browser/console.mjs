#!/usr/bin/env node
// Drives the web console (/admin/) and the player page (/{app}/{name}) in headless Chromium
// with playwright-core and prints one JSON line of what it saw. The Rust tests in
// tests/tests/console.rs decide what passes; this script only acts and measures.
//
// Scenarios (--scenario):
//   console  --base http://127.0.0.1:PORT --password P --stream live/NAME --publish JSON
//            [--screenshot FILE]
//            logs in by keyboard, starts the publisher (ffmpeg, the JSON array is its command
//            line), measures when the stream's row appears after the stream is live, previews
//            it, saves screenshots (desktop and phone width), kicks the publisher's session.
//   preview  --base https://127.0.0.1:PORT --password P --stream live/NAME --publish JSON
//            logs in, starts the publisher, previews the stream once its row is there and
//            reports what the preview played and which media URLs it asked for (a console
//            opened over HTTPS, with the test's self-signed certificate accepted).
//   records  --base http://127.0.0.1:PORT --password P
//            logs in and reports the recordings table: its column headers and the cells of
//            its first row by label, at desktop and at phone width.
//   page     --url PAGE_URL [--publish JSON] [--user-agent UA]
//            embeds the player page in an iframe of another origin; reports the page's HTTP
//            status and message; with --publish waits for the offline message, starts the
//            publisher and waits until the video plays. --user-agent poses as another browser
//            (an iPhone's, to see the page pick HLS).
//
// Env: FERROCAST_NODE_TOOLS / FERROCAST_TOOLS_DIR (where playwright-core is), CHROMIUM_PATH.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { launch as launchChromium } from './chromium.mjs';

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const scenario = arg('--scenario');

const out = { ok: false, scenario, errors: [], console: [], cspViolations: [] };
const hardStop = setTimeout(() => {
  out.errors.push('console.mjs hard timeout');
  finish(4);
}, 150000);
hardStop.unref();

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, ms, check, every = 100) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

// The publisher: ffmpeg with the command line the Rust test built.
let publisher = null;
function startPublisher(json) {
  const [program, ...args] = JSON.parse(json);
  publisher = { exited: false, exitedAt: null, code: null, stderr: '' };
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  publisher.child = child;
  child.stderr.on('data', (d) => (publisher.stderr = (publisher.stderr + d).slice(-2000)));
  child.on('exit', (code, signal) => {
    publisher.exited = true;
    publisher.exitedAt = Date.now();
    publisher.code = code === null ? signal : code;
  });
}

let browser;
let frameServer;
async function finish(code) {
  if (publisher && !publisher.exited) publisher.child.kill('SIGKILL');
  if (publisher) out.publisherStderr = publisher.stderr.slice(-500);
  out.console = out.console.slice(-30);
  try {
    if (browser) await browser.close();
  } catch (e) {
    out.errors.push('closing chromium: ' + e);
  }
  if (frameServer) frameServer.close();
  console.log(JSON.stringify(out));
  process.exit(code);
}

async function launch() {
  browser = await launchChromium('ferrocast-console-', {
    viewport: { width: 1280, height: 900 },
    userAgent: arg('--user-agent'),
    // The TLS tests' self-signed certificate.
    ignoreHTTPSErrors: true,
  });
  const page = browser.page;
  // The console's polls (setInterval) can be held, to see what the event stream does alone.
  await page.addInitScript(() => {
    window.__pollsHeld = false;
    const every = window.setInterval;
    window.setInterval = (fn, ms, ...rest) => every(() => window.__pollsHeld || fn(...rest), ms);
  });
  page.on('console', (m) => {
    const t = m.text();
    if (/Content.Security.Policy/i.test(t)) out.cspViolations.push(t.slice(0, 300));
    if (m.type() === 'error' || m.type() === 'warning') out.console.push(m.type() + ': ' + t.slice(0, 300));
  });
  page.on('pageerror', (e) => out.errors.push('pageerror: ' + e.message));
  return page;
}

// Logs in to the console at `base` by keyboard: the user field is filled in (admin); type
// the password, press Enter.
async function logIn(page, base, password) {
  await page.goto(base + '/admin/', { timeout: 15000 });
  await page.locator('#password').waitFor({ state: 'visible', timeout: 10000 });
  // Keyboard only: the user field is filled in (admin); type the password, press Enter.
  await page.locator('#password').focus();
  await page.keyboard.type(password);
  await page.keyboard.press('Enter');
  await page.locator('#app-view').waitFor({ state: 'visible', timeout: 10000 });
  out.loggedIn = true;
}

// Resolves with the time `base`/`stream` is live on the server (HEAD of its FLV URL answers
// 200), asked outside the page so the page's own requests stay the console's.
async function liveOnServer(page, base, stream) {
  const flv = base + '/' + stream + '.flv';
  return until('the stream to be live on the server', 30000, async () => {
    const r = await page.context().request.head(flv, { timeout: 5000 }).catch(() => null);
    return r && r.status() === 200 ? Date.now() : null;
  });
}

// The embedded player of the stream's row, started by keyboard (the row's button, then
// Enter); resolves with what it played ({ currentTime, width, height }) or null.
async function preview(page, row) {
  await row.getByRole('button', { name: 'Preview' }).focus();
  await page.keyboard.press('Enter');
  await page.locator('#play-urls input').first().waitFor({ timeout: 10000 });
  out.publishUrls = await page.locator('#publish-urls input').evaluateAll((l) => l.map((i) => i.value));
  out.playUrls = await page.locator('#play-urls input').evaluateAll((l) => l.map((i) => i.value));
  out.copyButtons = await page.locator('.url-list button').count();
  const played = await until('the console preview to play', 30000, () =>
    page.evaluate(() => {
      const v = document.getElementById('preview');
      return v.currentTime > 1.5 ? { currentTime: v.currentTime, width: v.videoWidth, height: v.videoHeight } : null;
    }), 250
  ).catch((e) => {
    out.errors.push(String(e.message));
    return null;
  });
  out.previewState = await page.locator('#preview-state').innerText();
  return played;
}

async function consoleScenario(page) {
  const base = arg('--base');
  const password = arg('--password');
  const stream = arg('--stream');
  const screenshot = arg('--screenshot');
  await logIn(page, base, password);
  await page.evaluate(() => (window.__sameDocument = true));
  await until('the event stream to connect', 10000, async () =>
    (await page.locator('#live-state').innerText()) === 'live'
  );
  out.liveState = await page.locator('#live-state').innerText();

  // Publish with the console's polls held, so only the event stream can bring the row, and
  // time from "live on the server" to "row in the console".
  const streamsFetches = [];
  page.on('request', (r) => {
    if (new URL(r.url()).pathname === '/api/v1/streams') streamsFetches.push(Date.now());
  });
  await page.evaluate(() => {
    window.__pollsHeld = true;
    window.__postPublishAt = null;
    window.ferrocastConsole.events.addEventListener('postPublish', () => (window.__postPublishAt ??= Date.now()));
  });
  const publishedAt = Date.now();
  startPublisher(arg('--publish'));
  const liveAt = await liveOnServer(page, base, stream);
  const row = page.locator(`#streams-table tr[data-stream="${stream}"]`);
  await row.waitFor({ state: 'visible', timeout: 20000 });
  const rowAt = Date.now();
  out.rowAfterLiveMs = rowAt - liveAt;
  out.pollsHeld = await page.evaluate(() => window.__pollsHeld);
  await page.evaluate(() => (window.__pollsHeld = false));
  const postPublishAt = await page.evaluate(() => window.__postPublishAt);
  out.postPublishEvent = postPublishAt !== null;
  // Every list fetch that brought the row followed the event.
  const fetches = streamsFetches.filter((t) => t >= publishedAt && t <= rowAt);
  out.streamsFetchesBeforeRow = fetches.length;
  out.streamsFetchesBeforeEvent = fetches.filter((t) => postPublishAt === null || t < postPublishAt).length;
  out.sameDocument = await page.evaluate(() => window.__sameDocument === true);
  // Codecs and frame rate follow a moment later (the publisher's first frames).
  out.rowText = await until('codec details in the row', 10000, async () => {
    const t = (await row.innerText()).replace(/\s+/g, ' ');
    return t.includes('1280x720') ? t : null;
  }).catch(async () => (await row.innerText()).replace(/\s+/g, ' '));

  out.preview = await preview(page, row);
  // Let a load sample or two arrive, so the charts show something.
  await sleep(2500);
  out.loadSamples = await page.evaluate(async () => {
    const r = await fetch('/api/v1/load', { headers: { Authorization: 'Bearer ' + sessionStorage.getItem('ferrocast.token') } });
    return (await r.json()).data.samples.length;
  });
  if (screenshot) {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    // A phone's width: nothing may need sideways scrolling.
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(300);
    out.phoneScrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    // Inside the scrolling table wrappers too: the stream's card and everything in it fit
    // the screen, and no wrapper scrolls sideways.
    out.phone = await page.evaluate((stream) => {
      const card = document.querySelector(`#streams-table tr[data-stream="${stream}"]`);
      const right = (el) => Math.max(el.getBoundingClientRect().right, ...[...el.querySelectorAll('*')].map((e) => e.getBoundingClientRect().right));
      return {
        cardRight: card ? Math.ceil(right(card)) : null,
        overflowingWraps: [...document.querySelectorAll('.table-wrap')]
          .filter((w) => w.offsetParent !== null && w.scrollWidth > w.clientWidth)
          .map((w) => w.parentElement.id),
      };
    }, stream);
    await page.screenshot({ path: screenshot.replace(/\.png$/, '-phone.png'), fullPage: true });
    await page.setViewportSize({ width: 1280, height: 900 });
  }

  // Kick the publisher's session from the sessions table.
  page.on('dialog', (d) => d.accept());
  const [app, name] = stream.split('/');
  const publisherRow = page
    .locator('#sessions-table tbody tr')
    .filter({ hasText: 'publisher' })
    .filter({ hasText: `${app}/${name}` });
  await publisherRow.first().waitFor({ timeout: 10000 });
  out.kickedSession = await publisherRow.first().getAttribute('data-session');
  await publisherRow.first().getByRole('button', { name: /Kick/ }).focus();
  out.publisherRunningAtKick = !publisher.exited;
  const kickedAt = Date.now();
  await page.keyboard.press('Enter');
  await until('the publisher to be disconnected', 20000, () => publisher.exited).catch((e) =>
    out.errors.push(String(e.message))
  );
  out.publisherExited = publisher.exited;
  out.publisherExitAfterKickMs = publisher.exited ? publisher.exitedAt - kickedAt : null;
  out.publisherCode = publisher.code;
  await row.waitFor({ state: 'detached', timeout: 20000 }).then(
    () => (out.rowGone = true),
    () => (out.rowGone = false)
  );
  out.ok = out.errors.length === 0;
}

async function previewScenario(page) {
  const base = arg('--base');
  const stream = arg('--stream');
  const media = [];
  const isMedia = (u) => u.includes(stream + '.flv') || u.includes(stream + '/');
  page.on('request', (r) => isMedia(r.url()) && media.push(r.url()));
  page.on('websocket', (w) => isMedia(w.url()) && media.push(w.url()));
  await logIn(page, base, arg('--password'));
  startPublisher(arg('--publish'));
  await liveOnServer(page, base, stream);
  const row = page.locator(`#streams-table tr[data-stream="${stream}"]`);
  await row.waitFor({ state: 'visible', timeout: 20000 });
  out.preview = await preview(page, row);
  out.previewMedia = [...new Set(media)];
  out.ok = out.errors.length === 0;
}

async function recordsScenario(page) {
  await logIn(page, arg('--base'), arg('--password'));
  const row = page.locator('#records-table tbody tr').first();
  await row.waitFor({ state: 'visible', timeout: 20000 });
  out.recordColumns = await page.locator('#records-table thead th').allInnerTexts();
  out.firstRecord = await row.evaluate((tr) =>
    Object.fromEntries([...tr.cells].map((td) => [td.dataset.label, td.textContent]))
  );
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(300);
  out.phoneRecordRight = await row.evaluate((tr) =>
    Math.ceil(Math.max(...[tr, ...tr.querySelectorAll('*')].map((e) => e.getBoundingClientRect().right)))
  );
  out.ok = out.errors.length === 0;
}

async function pageScenario(page) {
  const url = arg('--url');
  const publish = arg('--publish');
  // The player page inside an iframe of another origin, as a site would embed it.
  frameServer = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><title>embed</title><iframe id="f" src="${url}" width="640" height="360" allow="autoplay; fullscreen"></iframe>`);
  });
  await new Promise((r) => frameServer.listen(0, '127.0.0.1', r));
  const pageResponse = page.waitForResponse((r) => r.url() === url, { timeout: 15000 });
  await page.goto(`http://127.0.0.1:${frameServer.address().port}/`, { timeout: 15000 });
  const resp = await pageResponse;
  out.status = resp.status();
  out.csp = resp.headers()['content-security-policy'];
  const frame = await until('the iframe', 10000, () => page.frames().find((f) => f.url() === url));
  const read = () =>
    frame.evaluate(() => {
      const v = document.getElementById('video');
      const m = document.querySelector('.message');
      return {
        state: document.body.dataset.state || null,
        message: m ? m.textContent : null,
        protocol: window.ferrocastPlayer ? window.ferrocastPlayer.protocol : null,
        currentTime: v ? v.currentTime : null,
        width: v ? v.videoWidth : null,
      };
    });
  await frame.waitForLoadState('load');
  if (out.status !== 200) {
    out.message = await frame.evaluate(() => document.body.innerText);
    out.ok = true;
    return;
  }
  if (publish) {
    const offline = await until('the offline message', 15000, async () => {
      const s = await read();
      return s.state === 'offline' ? s : null;
    }, 200);
    out.offline = offline;
    startPublisher(publish);
  }
  const playing = await until('the player page to play', 40000, async () => {
    const s = await read();
    return s.state === 'playing' && s.currentTime > 1.5 ? s : null;
  }, 250).catch((e) => {
    out.errors.push(String(e.message));
    return null;
  });
  out.playing = playing || (await read());
  out.ok = out.errors.length === 0;
}

try {
  const page = await launch();
  if (scenario === 'console') await consoleScenario(page);
  else if (scenario === 'preview') await previewScenario(page);
  else if (scenario === 'records') await recordsScenario(page);
  else if (scenario === 'page') await pageScenario(page);
  else out.errors.push('unknown --scenario ' + scenario);
} catch (e) {
  out.errors.push(String(e && e.stack ? e.stack : e));
}
await finish(out.ok ? 0 : 1);
