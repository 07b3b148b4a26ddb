// Drives one Debian firefox-esr over WebDriver BiDi for the Python browser tests (lab_extra.py's
// FirefoxBrowser). Run it inside the lab namespace (`ip netns exec NS node driver.mjs FIREFOX
// PROFILE`): puppeteer talks to Firefox over a WebSocket on 127.0.0.1 of that namespace, and every
// packet the browser sends leaves from there.
//
// Commands come as JSON lines on stdin, `{id, op, ...}`; each gets one line back on stdout,
// `{id, value}` or `{id, error}`. Console lines and page errors of the pages come as
// `{event: "console", page, text}` whenever they happen. End of stdin closes the browser.

import readline from 'node:readline';
import puppeteer from 'puppeteer-core';

const [executablePath, userDataDir] = process.argv.slice(2);

// Fake camera and microphone, no permission prompt, remote audio plays without a click: what
// Chromium's --use-fake-* and --autoplay-policy flags do in the Chromium lab.
const PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
};

const browser = await puppeteer.launch({
  browser: 'firefox',
  executablePath,
  userDataDir,
  headless: true,
  extraPrefsFirefox: PREFS,
  timeout: 60_000,
});

const pages = new Map(); // name -> {context, page}

function emit(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function pageNamed(name) {
  const entry = pages.get(name);
  if (!entry) throw new Error(`no page ${name}`);
  return entry.page;
}

const ops = {
  /** A page in a browser context of its own; a window, not a tab, so that it is never hidden. */
  async open({ page: name, width, height }) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage({ type: 'window' });
    await page.setViewport({ width, height });
    page.on('console', (m) => emit({ event: 'console', page: name, text: `${m.type()}: ${m.text()}` }));
    page.on('pageerror', (err) => {
      // Firefox reports its own ICE failures as errors of the page ("WebRTC: ICE failed, add a STUN
      // server…"), and a WebSocket it could not open while a server restarts ("Firefox can't
      // establish a connection to the server at wss://…"); they are the browser's notes, not
      // exceptions the page threw.
      const kind = /^(WebRTC: |Firefox can.t establish a connection to the server at wss:)/.test(err.message)
        ? 'firefox'
        : 'pageerror';
      emit({ event: 'console', page: name, text: `${kind}: ${err}` });
    });
    pages.set(name, { context, page });
  },
  async initScript({ page, source }) {
    await pageNamed(page).evaluateOnNewDocument(source);
  },
  async goto({ page, url }) {
    const response = await pageNamed(page).goto(url, { waitUntil: 'domcontentloaded', timeout: 20_000 });
    return response ? response.status() : null;
  },
  async evaluate({ page, expression }) {
    return pageNamed(page).evaluate(expression);
  },
  async screenshot({ page, path }) {
    await pageNamed(page).screenshot({ path });
  },
  async closePage({ page }) {
    const entry = pages.get(page);
    pages.delete(page);
    if (entry) await entry.context.close();
  },
};

emit({ ready: true, version: await browser.version() });

// One command at a time, in order: a `goto` must be done before the `evaluate` sent after it.
let queue = Promise.resolve();
const lines = readline.createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const { id, op, ...args } = JSON.parse(line);
  queue = queue.then(async () => {
    try {
      emit({ id, value: (await ops[op](args)) ?? null });
    } catch (err) {
      emit({ id, error: String((err && err.message) || err) });
    }
  });
});
lines.on('close', async () => {
  await queue;
  await browser.close().catch(() => {});
  process.exit(0);
});
