// The chat page and the dashboard in Debian's Chromium (headless, driven by
// playwright-core; the browser is the system's, never a downloaded one),
// against a real hubcast: two pages chat; one goes offline while the other
// sends 20 messages and, back online, shows each once and in order;
// presence, status and direct messages reach the other page; the
// dashboard's counters and charts move and it lists a client's error; a
// message is labelled by its sender, never by the name its data claims.
// With SCREENSHOTS=dir, screenshots of both pages are saved there.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { chromium } from 'playwright-core';
import { startServer, waitFor, sleep } from './helpers.mjs';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const API_KEY = 'dashboard-test-key-0123456789';
const shots = process.env.SCREENSHOTS;

let server;
let browser;
before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM)`);
  server = await startServer({ args: ['--api-key', API_KEY] });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root in a sandbox, with no network beyond loopback.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

async function open(urlPath) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 720 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  await page.goto(server.http + urlPath);
  return { context, page, problems };
}

async function signIn(page, name) {
  await page.fill('#name', name);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#conn[data-state=connected]');
  return page.evaluate(() => window.hubcast.user);
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/** The texts of delivered (not pending) messages on a page, in order. */
const texts = (page) => page.$$eval('#messages li.msg:not(.pending) .text', (els) => els.map((e) => e.textContent));

async function shows(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll('#messages li.msg:not(.pending) .text')].some((e) => e.textContent === t),
    text,
  );
}

test('two pages chat; an offline page gets what it missed once, in order; presence and DMs', async () => {
  const ada = await open('/');
  const bob = await open('/');
  const adaUser = await signIn(ada.page, 'Ada');
  const bobUser = await signIn(bob.page, 'Bob');

  await say(ada.page, 'hello from Ada');
  await shows(bob.page, 'hello from Ada');
  await say(bob.page, 'hi Ada!');
  await shows(ada.page, 'hi Ada!');

  // Presence: each sees the other, and a status change.
  await ada.page.waitForSelector(`#members li[data-user="${bobUser}"][data-status=online]`);
  await bob.page.waitForSelector(`#members li[data-user="${adaUser}"]`);
  await bob.page.selectOption('#status', 'away');
  await ada.page.waitForSelector(`#members li[data-user="${bobUser}"][data-status=away]`);
  await bob.page.selectOption('#status', 'busy');
  await ada.page.waitForSelector(`#members li[data-user="${bobUser}"][data-status=busy]`);
  if (shots) await ada.page.screenshot({ path: path.join(shots, 'chat.png') });

  // Bob's browser goes offline; Ada sends 20 messages meanwhile.
  await bob.context.setOffline(true);
  await bob.page.waitForSelector('#conn[data-state=reconnecting]');
  const sent = Array.from({ length: 20 }, (_, i) => `m${i + 1}`);
  for (const t of sent) await say(ada.page, t);
  await shows(ada.page, 'm20');
  await sleep(300);
  assert.ok(!(await texts(bob.page)).includes('m1'), 'nothing reached the offline page');
  await bob.context.setOffline(false);
  await bob.page.waitForSelector('#conn[data-state=connected]');
  await shows(bob.page, 'm20');
  await sleep(300);
  const got = await texts(bob.page);
  assert.deepEqual(got.filter((t) => /^m\d+$/.test(t)), sent, 'all 20, once each, in order');
  assert.deepEqual(got.slice(0, 2), ['hello from Ada', 'hi Ada!']);
  // Bob's status came back with him (an anonymous user is a new user id
  // on each connection, so the old one left).
  const bobAgain = await bob.page.evaluate(() => window.hubcast.user);
  await ada.page.waitForSelector(`#members li[data-user="${bobAgain}"][data-status=busy]`);
  await ada.page.waitForSelector(`#members li[data-user="${bobUser}"]`, { state: 'detached' });
  // His own earlier message is still his.
  await bob.page.waitForSelector('#messages li.msg.mine .text:text-is("hi Ada!")');

  // A direct message: Ada clicks Bob in the member list.
  await ada.page.click(`#members li[data-user="${bobAgain}"]`);
  await say(ada.page, 'psst, Bob');
  await bob.page.waitForSelector(`#dms li[data-key="@${adaUser}"]`);
  await bob.page.click(`#dms li[data-key="@${adaUser}"]`);
  await shows(bob.page, 'psst, Bob');
  await shows(ada.page, 'psst, Bob');

  // A page that arrives later loads the room's history on join.
  const cy = await open('/');
  await signIn(cy.page, 'Cy');
  await shows(cy.page, 'm20');
  assert.deepEqual((await texts(cy.page)).slice(0, 3), ['hello from Ada', 'hi Ada!', 'm1']);
  // Leaving a room: gone from the list, and the others see Cy leave.
  const cyUser = await cy.page.evaluate(() => window.hubcast.user);
  await ada.page.click('#rooms li[data-key="#lobby"]');
  await ada.page.waitForSelector(`#members li[data-user="${cyUser}"]`);
  await cy.page.click('#leave');
  await cy.page.waitForSelector('#rooms li[data-key="#lobby"]', { state: 'detached' });
  await ada.page.waitForSelector(`#members li[data-user="${cyUser}"]`, { state: 'detached' });
  await cy.context.close();

  // The server restarts (the memory engine forgets its rooms): the pages
  // reconnect by themselves, are told the gap cannot be filled, reload the
  // room and go on.
  const port = server.port;
  await server.stop();
  await ada.page.waitForSelector('#conn[data-state=reconnecting]');
  server = await startServer({ port, args: ['--api-key', API_KEY] });
  await ada.page.waitForSelector('#conn[data-state=connected]', { timeout: 30000 });
  await ada.page.waitForSelector('#notice:not([hidden])');
  assert.match(await ada.page.textContent('#notice'), /could not be recovered/);
  await bob.page.waitForSelector('#conn[data-state=connected]', { timeout: 30000 });
  await bob.page.click('#rooms li[data-key="#lobby"]');
  await say(bob.page, 'back after the restart');
  await shows(ada.page, 'back after the restart');

  // Reconnect attempts while the server was down failed to load: expected.
  const problems = [...ada.problems, ...bob.problems].filter((p) => !p.includes('WebSocket connection'));
  assert.deepEqual(problems, []);
  await ada.context.close();
  await bob.context.close();
});

test('a message is labelled by its sender, whatever name its data claims', async () => {
  const ada = await open('/');
  await signIn(ada.page, 'Ada');
  // Another client, named Mallory by the server, publishes into the lobby
  // with data that claims to be Ada's.
  const ws = new WebSocket(`${server.ws}?name=Mallory`);
  const frames = [];
  ws.onmessage = (e) => frames.push(JSON.parse(e.data));
  await waitFor(() => frames.some((f) => f.type === 'welcome'), 'welcome');
  ws.send(JSON.stringify({ type: 'join', id: 1, room: 'lobby' }));
  await waitFor(() => frames.some((f) => f.type === 'joined'), 'joined');
  ws.send(JSON.stringify({ type: 'publish', id: 2, room: 'lobby', event: 'chat.message', data: { text: 'trust me', name: 'Ada' } }));
  await shows(ada.page, 'trust me');
  const who = await ada.page.$$eval('#messages li.msg:not(.pending)', (els) =>
    els.filter((li) => li.querySelector('.text')?.textContent === 'trust me').map((li) => li.querySelector('.who').textContent));
  assert.deepEqual(who, ['Mallory']);
  ws.close();
  await ada.context.close();
});

test('the dashboard signs in with the API key and its counters move', async () => {
  const dash = await open('/admin');
  // A wrong key is refused.
  await dash.page.fill('#key', 'not-the-key-at-all');
  await dash.page.click('#login-form button[type=submit]');
  await dash.page.waitForSelector('#login-error:not([hidden])');
  await dash.page.fill('#key', API_KEY);
  await dash.page.click('#login-form button[type=submit]');
  await dash.page.waitForSelector('#dash:not([hidden])');
  const num = async (id) => Number((await dash.page.textContent(`#${id}`)).replace(/[^0-9.]/g, '')) || 0;
  const before = { conns: await num('connections'), published: await dash.page.textContent('#published') };

  const chat = await open('/');
  await signIn(chat.page, 'Cy');
  await chat.page.fill('#join-name', 'dashboard-room');
  await chat.page.press('#join-name', 'Enter');
  await chat.page.waitForSelector('#rooms li[data-key="#dashboard-room"]');
  for (let i = 0; i < 5; i++) await say(chat.page, `tick ${i}`);
  await shows(chat.page, 'tick 4');

  await waitFor(async () => (await num('connections')) > before.conns, 'connections to rise');
  await waitFor(async () => (await dash.page.textContent('#published')) !== before.published, 'published to move');
  await dash.page.waitForSelector('#rooms-table td:text-is("dashboard-room")');
  await waitFor(async () => Number(await dash.page.getAttribute('#chart-msgs', 'data-points')) >= 3, 'chart points');

  // A client's bad frame shows among the recent errors.
  const ws = new WebSocket(server.ws);
  await new Promise((r) => (ws.onopen = r));
  ws.send(JSON.stringify({ type: 'shout', id: 1 }));
  await dash.page.waitForSelector('#events-table td:text-is("unknown_type")');
  ws.close();

  if (shots) await dash.page.screenshot({ path: path.join(shots, 'dashboard.png') });
  // The refused sign-in's 401 is the only complaint.
  const problems = [...dash.problems, ...chat.problems].filter((p) => !p.includes('401 (Unauthorized)'));
  assert.deepEqual(problems, []);
  await dash.context.close();
  await chat.context.close();
});

/** An anonymous WebSocket connection: its user id and its close code. */
async function connectUser() {
  const ws = new WebSocket(server.ws);
  const frames = [];
  const closed = new Promise((resolve) => (ws.onclose = (e) => resolve(e.code)));
  ws.onmessage = (e) => frames.push(JSON.parse(e.data));
  const welcome = await waitFor(() => frames.find((f) => f.type === 'welcome'), 'welcome');
  return { ws, user: welcome.user, closed };
}

test('the dashboard blocks, lists, unblocks and disconnects a user', async () => {
  const dash = await open('/admin');
  await dash.page.fill('#key', API_KEY);
  await dash.page.click('#login-form button[type=submit]');
  await dash.page.waitForSelector('#blocked-table td:text-is("No user is blocked.")');

  // Block for ten minutes: the user's connection closes with 4004 and the
  // list (the server's /api/users/blocked) shows them with the expiry.
  const eve = await connectUser();
  await dash.page.fill('#user-id', eve.user);
  await dash.page.fill('#block-ttl', '600');
  const t0 = Date.now();
  await dash.page.click('#user-block');
  assert.equal(await eve.closed, 4004);
  const rowSel = `#blocked-table tr[data-user="${eve.user}"]`;
  await dash.page.waitForSelector(rowSel);
  const until = await dash.page.textContent(`${rowSel} td:nth-child(2)`);
  const listed = await (await fetch(`${server.http}/api/users/blocked`, { headers: { Authorization: `Bearer ${API_KEY}` } })).json();
  assert.equal(listed.users.length, 1);
  assert.equal(listed.users[0].user, eve.user);
  assert.ok(Math.abs(listed.users[0].until * 1000 - (t0 + 600_000)) < 5000, `until ${listed.users[0].until}`);
  assert.equal(until, await dash.page.evaluate((s) => new Date(s * 1000).toLocaleString(), listed.users[0].until));
  assert.match(await dash.page.textContent('#user-result'), /Blocked .* for 600 s/);

  // A bad ttl is refused with the server's reason, and changes nothing.
  await dash.page.fill('#block-ttl', '99999999999');
  await dash.page.click('#user-block');
  await dash.page.waitForSelector('#user-result.error-text');
  assert.match(await dash.page.textContent('#user-result'), /`ttl`/);

  // Unblock from the list: it empties.
  await dash.page.click(`${rowSel} button.unblock`);
  await dash.page.waitForSelector('#blocked-table td:text-is("No user is blocked.")');
  await dash.page.waitForSelector('#user-result:text-matches("^Unblocked ")');
  const after = await (await fetch(`${server.http}/api/users/blocked`, { headers: { Authorization: `Bearer ${API_KEY}` } })).json();
  assert.deepEqual(after, { users: [] });

  // A block without ttl lasts until unblocked.
  const sam = await connectUser();
  await dash.page.fill('#user-id', sam.user);
  await dash.page.fill('#block-ttl', '');
  await dash.page.click('#user-block');
  assert.equal(await sam.closed, 4004);
  await dash.page.waitForSelector(`#blocked-table tr[data-user="${sam.user}"] td:text-is("until unblocked")`);
  await dash.page.click(`#blocked-table tr[data-user="${sam.user}"] button.unblock`);
  await dash.page.waitForSelector('#blocked-table td:text-is("No user is blocked.")');

  // Disconnect: 4005, and the dashboard says how many connections closed.
  const ian = await connectUser();
  await dash.page.fill('#user-id', ian.user);
  await dash.page.click('#user-disconnect');
  assert.equal(await ian.closed, 4005);
  await dash.page.waitForSelector('#user-result:text-is("Disconnected ' + ian.user + ' (1 connection)")');

  if (shots) await dash.page.screenshot({ path: path.join(shots, 'dashboard-users.png') });
  // The refused ttl's 400 is the only complaint.
  assert.deepEqual(dash.problems.filter((p) => !p.includes('400 (Bad Request)')), []);
  await dash.context.close();
});
