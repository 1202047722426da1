// The example backend (examples/backend) with a hubcast that asks it, in
// Debian's Chromium: a person signs in on the backend's page, lands on the
// chat page signed in by the session cookie (the connect hook), and
// chats; the backend stores each message (the publish hook), refuses one
// it does not allow, answers the page's rpc and receives the webhooks'
// events. A handshake without the cookie is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { createServer, request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';
import { startServer, waitFor } from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const SECRET = 'example-test-secret-0123456789';

let backend;
let backendUrl;
let server;
let browser;
let dir;

async function freePort() {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = s.address().port;
  s.close();
  await once(s, 'close');
  return port;
}

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM)`);
  // The backend must know where the chat page is, and hubcast where the
  // backend is: hubcast's port is chosen first.
  const port = await freePort();
  backend = spawn(process.execPath, [path.join(root, 'examples/backend/server.mjs')], {
    env: { ...process.env, PORT: '0', HOOK_SECRET: SECRET, CHAT_URL: `http://127.0.0.1:${port}/` },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  backendUrl = await new Promise((resolve, reject) => {
    backend.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/[0-9.]+:\d+)/.exec(out);
      if (m) resolve(m[1]);
    });
    backend.on('exit', (code) => reject(new Error(`the example backend exited with ${code}: ${out}`)));
  });
  dir = mkdtempSync(path.join(os.tmpdir(), 'hubcast-example-'));
  const config = path.join(dir, 'hubcast.toml');
  // The example's own config, with this test's backend address and secret.
  writeFileSync(config, `[hooks]
url = "${backendUrl}/hubcast/hooks"
secret = "${SECRET}"
timeout_ms = 2000
connect = true
rpc = true

[[rooms]]
match = "lobby"
publish = "hook"

[[webhooks]]
url = "${backendUrl}/hubcast/events"
secret = "${SECRET}"
events = ["user.online", "member.joined"]
`);
  server = await startServer({ port, args: ['--config', config] });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (backend && backend.exitCode === null) {
    backend.kill('SIGTERM');
    await once(backend, 'exit');
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const stored = async (room) => (await fetch(`${backendUrl}/messages?room=${room}`)).json();

test('signed in by the backend cookie, messages stored and refused by the publish hook, rpc answered', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await page.goto(`${backendUrl}/`);
  await page.fill('#name', 'Ada Lovelace');
  await page.click('button[type=submit]');
  try {
    await page.waitForSelector('#conn[data-state=connected]', { timeout: 10000 });
  } catch (e) {
    throw new Error(`${e.message}\nat ${page.url()}\n${problems.join('\n')}\n${server.log()}`);
  }
  assert.equal(await page.evaluate(() => window.hubcast.user), 'ada-lovelace', 'the backend named the user');
  assert.equal(await page.evaluate(() => window.hubcast.name), 'Ada Lovelace');

  // `lobby` is joined at connect (the connect answer's `subs`).
  await page.waitForFunction(() => window.hubcast.rooms.get('lobby')?.joined);
  await page.fill('#text', 'hello from Ada');
  await page.press('#text', 'Enter');
  await page.waitForFunction(() =>
    [...document.querySelectorAll('#messages li.msg:not(.pending) .text')].some((e) => e.textContent === 'hello from Ada'));
  const kept = await stored('lobby');
  assert.deepEqual(kept.map((m) => [m.user, m.data.text]), [['ada-lovelace', 'hello from Ada']]);

  // The backend refuses a word: the page says so, nothing is stored.
  await page.fill('#text', 'cheap spam here');
  await page.press('#text', 'Enter');
  await page.waitForFunction(() =>
    [...document.querySelectorAll('#messages li.msg.failed')].some((e) => e.textContent.includes('is not allowed here')));
  assert.equal((await stored('lobby')).length, 1);

  const recent = await page.evaluate(() => window.hubcast.rpc('messages.recent', { room: 'lobby' }));
  assert.deepEqual(recent.map((m) => m.data.text), ['hello from Ada']);

  // The webhooks told the backend (signed, checked by it) who came.
  await waitFor(async () => {
    const events = await (await fetch(`${backendUrl}/events`)).json();
    return events.some((e) => e.type === 'user.online' && e.user === 'ada-lovelace')
      && events.some((e) => e.type === 'member.joined' && e.user === 'ada-lovelace' && e.room === 'lobby');
  }, 'user.online and member.joined for Ada at the backend');
  assert.deepEqual(problems, []);
  await context.close();
});

test('a handshake without the session cookie is refused', async () => {
  const status = await new Promise((resolve, reject) => {
    const req = request(`${server.http}/ws`, {
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'sec-websocket-protocol': 'hubcast.v1',
      },
    });
    req.on('response', (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on('error', reject);
    req.end();
  });
  assert.equal(status, 401);
});
