// The chat page through the load balancer, in Debian's Chromium (driven by
// playwright-core from crates/hubcast/web), for scripts/test-deploy: two
// pages sign in (anonymous, by name), one says something, the other shows
// it. Exit 0 and one line, or exit 1 naming what failed.
//
//   node chat-check.mjs BASE_URL
import { createRequire } from 'node:module';

const base = process.argv[2];
if (!base) {
  console.error('usage: chat-check.mjs BASE_URL');
  process.exit(2);
}
const require = createRequire(new URL('../../crates/hubcast/web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // As root in a sandbox, with no network beyond loopback.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const problems = [];
try {
  const open = async (name) => {
    const page = await (await browser.newContext()).newPage();
    page.on('pageerror', (e) => problems.push(`${name}: page error: ${e.message}`));
    await page.goto(base + '/');
    await page.fill('#name', name);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#conn[data-state=connected]', { timeout: 15000 });
    return page;
  };
  const ada = await open('Ada');
  const bob = await open('Bob');
  const text = `through the load balancer ${Date.now()}`;
  await ada.fill('#text', text);
  await ada.press('#text', 'Enter');
  await bob.waitForFunction(
    (t) => [...document.querySelectorAll('#messages li.msg:not(.pending) .text')].some((e) => e.textContent === t),
    text,
    { timeout: 15000 },
  );
  if (problems.length) throw new Error(problems.join('; '));
  console.log(`chat-check: two chat pages at ${base} signed in, and Bob's shows what Ada said`);
} catch (e) {
  console.error(`chat-check: ${e.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
