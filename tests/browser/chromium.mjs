// Headless Chromium for the browser tests and the latency benchmark: where the npm tools are
// (playwright-core, mpegts.js, hls.js, dashjs) and one way to launch the browser.
//
// Env: FERROCAST_NODE_TOOLS (default $FERROCAST_TOOLS_DIR/node, else <repo>/.tools/node),
//      CHROMIUM_PATH (default /usr/bin/chromium).

import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const toolsDir =
  process.env.FERROCAST_NODE_TOOLS ||
  (process.env.FERROCAST_TOOLS_DIR && path.join(process.env.FERROCAST_TOOLS_DIR, 'node')) ||
  path.resolve(here, '../../.tools/node');
const require = createRequire(path.join(toolsDir, 'package.json'));

/// A file of an installed npm package, e.g. nodeModuleFile('hls.js', 'dist', 'hls.min.js').
export function nodeModuleFile(...parts) {
  return fs.readFileSync(path.join(toolsDir, 'node_modules', ...parts));
}

/// Launches headless Chromium in a throwaway profile (`prefix` names its directory);
/// `options` are added to playwright's launchPersistentContext options (viewport, userAgent).
/// Returns { context, page, close }: close() shuts the browser and removes the profile.
export async function launch(prefix, options = {}) {
  const { chromium } = require('playwright-core');
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run',
        '--headless',
        '--autoplay-policy=no-user-gesture-required',
      ],
      timeout: 30000,
      ...options,
    });
  } catch (e) {
    fs.rmSync(userDataDir, { recursive: true, force: true });
    throw e;
  }
  const page = context.pages()[0] || (await context.newPage());
  return {
    context,
    page,
    async close() {
      try {
        await context.close();
      } finally {
        fs.rmSync(userDataDir, { recursive: true, force: true });
      }
    },
  };
}
