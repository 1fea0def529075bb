#!/usr/bin/env node
// Opens a page in headless Chromium and waits until some element shows a text.
//
//   node page-check.mjs URL --wait-text TEXT [--selector CSS] [--timeout-ms N]
//        [--screenshot PATH] [--viewport WxH] [--expect-no-console-errors] [--eval JS]
//
// The page may update itself (JavaScript, EventSource) without reloading: the
// element's innerText is polled until it contains TEXT (also matched with runs of
// whitespace collapsed, so text split over lines or elements still matches).
//
// Output: one JSON line on stdout,
//   {"ok":true,"text":"<innerText of the element>","elapsed_ms":N,"console_errors":[...]}
// plus "eval": <result> with --eval JS (an expression evaluated in the page after
// the wait; a promise is awaited). "console_errors" lists the page's console
// errors and uncaught exceptions (a 404 of the browser's implicit /favicon.ico
// request is not one). Exit status:
//   0  the text appeared (and, with --expect-no-console-errors, the page logged no
//      console error and threw no uncaught exception);
//   1  it did not within --timeout-ms (default 10000), or the page logged errors:
//      "ok":false, the last text seen, and the screenshot is written anyway;
//   2  anything else (bad arguments, no browser, page failed to load, --eval
//      threw): one line on stderr.
//
// Environment: COFFER_TEST_CHROMIUM, the Chromium executable (required);
// COFFER_TEST_BROWSER_DIR, the directory whose node_modules holds playwright-core
// (scripts/test-tools installs both and exports them). Without it, the module is
// looked up from this file's directory and NODE_PATH.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

function fail(message) {
  process.stderr.write(`page-check: ${String(message).split('\n')[0]}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = {
    url: null,
    waitText: null,
    selector: 'body',
    timeoutMs: 10000,
    screenshot: null,
    viewport: null,
    noConsoleErrors: false,
    evalJs: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--wait-text': o.waitText = value(); break;
      case '--selector': o.selector = value(); break;
      case '--timeout-ms': {
        const v = value();
        o.timeoutMs = Number(v);
        if (!Number.isInteger(o.timeoutMs) || o.timeoutMs <= 0) fail(`bad --timeout-ms ${v}`);
        break;
      }
      case '--screenshot': o.screenshot = resolve(value()); break;
      case '--viewport': {
        const v = value();
        const m = /^(\d+)x(\d+)$/.exec(v);
        if (!m) fail(`bad --viewport ${v} (expected WIDTHxHEIGHT, e.g. 390x844)`);
        o.viewport = { width: Number(m[1]), height: Number(m[2]) };
        break;
      }
      case '--expect-no-console-errors': o.noConsoleErrors = true; break;
      case '--eval': o.evalJs = value(); break;
      default:
        if (a.startsWith('--') || o.url !== null) fail(`unexpected argument ${a}`);
        o.url = a;
    }
  }
  if (o.url === null) fail('usage: page-check.mjs URL --wait-text TEXT [--selector CSS] [--timeout-ms N] [--screenshot PATH] [--viewport WxH] [--expect-no-console-errors] [--eval JS]');
  if (o.waitText === null) fail('--wait-text is required');
  return o;
}

function loadPlaywright() {
  const dir = process.env.COFFER_TEST_BROWSER_DIR;
  const from = dir ? join(dir, 'package.json') : import.meta.url;
  try {
    return createRequire(from)('playwright-core');
  } catch (e) {
    fail(`cannot load playwright-core from ${dir || 'NODE_PATH'} (run scripts/test, which installs it): ${e.message}`);
  }
}

const collapse = (s) => s.replace(/\s+/g, ' ').trim();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const executablePath = process.env.COFFER_TEST_CHROMIUM;
  if (!executablePath) fail('COFFER_TEST_CHROMIUM is not set (run scripts/test, which installs Chromium and exports it)');
  const { chromium } = loadPlaywright();

  let browser;
  try {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      timeout: 60000,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
    });
  } catch (e) {
    fail(`cannot launch ${executablePath}: ${e.message}`);
  }

  let code = 2;
  try {
    const context = await browser.newContext(o.viewport ? { viewport: o.viewport } : {});
    const page = await context.newPage();
    const consoleErrors = [];
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      const at = m.location().url || '';
      // The browser's own favicon request is not the page's doing.
      if (/\/favicon\.ico$/.test(at) && m.text().startsWith('Failed to load resource')) return;
      consoleErrors.push(at ? `${m.text()} (${at})` : m.text());
    });
    page.on('pageerror', (e) => consoleErrors.push(`uncaught: ${e.message}`));

    const start = Date.now();
    const deadline = start + o.timeoutMs;
    // Not `load` or `networkidle`: a page holding an EventSource open never idles.
    await page.goto(o.url, { waitUntil: 'domcontentloaded', timeout: o.timeoutMs });

    const want = collapse(o.waitText);
    let text = '';
    let found = false;
    for (;;) {
      try {
        const t = await page.evaluate((sel) => {
          const el = document.querySelector(sel);
          return el ? el.innerText : null;
        }, o.selector);
        if (t !== null) text = t;
        found = t !== null && (t.includes(o.waitText) || collapse(t).includes(want));
      } catch {
        // The page is navigating (it reloaded itself): poll again.
      }
      if (found || Date.now() >= deadline) break;
      await sleep(100);
    }
    const elapsed = Date.now() - start;

    const out = { ok: found, text, elapsed_ms: elapsed, console_errors: consoleErrors };
    if (found && o.evalJs !== null) {
      let v;
      try {
        v = await page.evaluate(o.evalJs);
      } catch (e) {
        throw new Error(`--eval threw: ${e.message}`);
      }
      out.eval = v === undefined ? null : v;
    }
    if (o.noConsoleErrors && consoleErrors.length > 0) out.ok = false;
    if (o.screenshot) {
      mkdirSync(dirname(o.screenshot), { recursive: true });
      await page.screenshot({ path: o.screenshot, fullPage: true });
    }
    process.stdout.write(JSON.stringify(out) + '\n');
    code = out.ok ? 0 : 1;
  } catch (e) {
    process.stderr.write(`page-check: ${String(e.message).split('\n')[0]}\n`);
    code = 2;
  } finally {
    // Never hang on a browser that will not close.
    await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
  }
  process.exit(code);
}

main().catch((e) => fail(e && e.message ? e.message : e));
