// The JavaScript client against a real hubcast (the binary, on loopback):
// acked publish, presence and status, direct messages, recovery after a
// lost connection, reconnect after a server restart, a publish retried
// across a reconnect delivered once, dead-connection detection, the
// offline queue bound, timeouts, and no reconnect after 4001 or 1008.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { Hubcast } from '../client/hubcast.js';
import { startServer, startProxy, closingServer, jwt, waitFor, sleep, collect } from './helpers.mjs';

const fast = { minDelay: 50, maxDelay: 300, pingInterval: 60000, connectTimeout: 1000 };
const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});
async function server(opts) {
  const s = await startServer(opts);
  cleanup.push(() => s.stop());
  return s;
}
function client(url, opts = {}) {
  const hc = new Hubcast(url, { ...fast, ...opts });
  cleanup.push(() => hc.close());
  return hc;
}
const connected = (hc) => waitFor(() => hc.state === 'connected', `${hc.options.name} connected`);

test('publish, presence, status and direct messages between two clients', async () => {
  const s = await server();
  const ada = client(s.ws, { name: 'Ada' });
  const states = collect(ada, 'state');
  const bob = client(s.ws, { name: 'Bob' });
  const roomA = await ada.join('lobby');
  assert.deepEqual(states.map((x) => x[0]), ['connecting', 'connected']);
  assert.equal(ada.name, 'Ada');
  const roomB = await bob.join('lobby');
  const got = collect(roomB, 'message');
  const presence = collect(roomA, 'presence');

  await waitFor(() => roomA.members.has(bob.user), 'Bob in Ada\'s member list');
  const ack = await roomA.publish('chat.message', { text: 'hi' });
  assert.equal(ack.type, 'ack');
  assert.equal(ack.room, 'lobby');
  assert.equal(ack.duplicate, false);
  await waitFor(() => got.length === 1, 'Bob got the message');
  assert.equal(got[0].data.text, 'hi');
  assert.equal(got[0].source, ada.user);
  assert.equal(got[0].msgId, ack.msgId);
  assert.equal(roomB.offset, ack.offset);

  await bob.setStatus('away');
  await waitFor(() => presence.some((p) => p.action === 'status' && p.user === bob.user && p.status === 'away'), 'status event');
  assert.equal(roomA.members.get(bob.user).status, 'away');

  const dms = collect(bob, 'direct');
  const dmAck = await ada.send(bob.user, 'dm', { text: 'psst' });
  assert.equal(dmAck.room, `@${bob.user}`);
  await waitFor(() => dms.length === 1, 'direct message');
  assert.equal(dms[0].data.text, 'psst');

  const page = await roomB.history({ limit: 10 });
  assert.deepEqual(page.messages.map((m) => m.data.text), ['hi']);
  assert.ok((await ada.ping()) >= 0);

  await roomB.leave();
  await waitFor(() => presence.some((p) => p.action === 'leave' && p.user === bob.user), 'leave event');
  assert.ok(!roomA.members.has(bob.user));
  await roomA.publish('chat.message', { text: 'after leave' });
  await sleep(100);
  assert.equal(got.length, 1, 'nothing after leave');

  // Errors of the server reject with their code; the client stays usable.
  await assert.rejects(ada.publish('lobby', 'bad event name!', {}), { code: 'bad_request' });
  await assert.rejects(ada.join('@someone-else'), { code: 'forbidden' });
  assert.ok(!ada.rooms.has('@someone-else'));
  await roomA.publish('chat.message', { text: 'still fine' });
});

test('messages missed while disconnected arrive once, in order', async () => {
  // The reader signs in with a token: direct messages are recovered for a
  // user, and an anonymous user is a new one on every connection.
  const secret = 'a-secret-of-at-least-16-bytes';
  const s = await server({ args: ['--jwt-secret', secret] });
  const proxy = await startProxy(s.addr);
  cleanup.push(() => proxy.close());
  const reader = client(proxy.ws, { token: jwt(secret, { sub: 'reader', exp: Math.floor(Date.now() / 1000) + 600 }) });
  const writer = client(s.ws, { name: 'Writer' });
  const room = await reader.join('news');
  const got = collect(room, 'message');
  await room.publish('n', { i: 0 }, { echo: true });
  await waitFor(() => got.length === 1, 'first message');

  proxy.refuse = true;
  proxy.cut();
  await waitFor(() => reader.state === 'reconnecting', 'reader reconnecting');
  for (let i = 1; i <= 20; i++) await writer.publish('news', 'n', { i });
  proxy.refuse = false;
  await waitFor(() => got.length >= 21, 'all 21 messages', 15000);
  await sleep(200);
  assert.deepEqual(got.map((m) => m.data.i), [...Array(21).keys()]);
  assert.equal(new Set(got.map((m) => m.msgId)).size, 21);
  assert.equal(reader.state, 'connected');

  // Direct messages missed meanwhile come back too (personal room rejoin).
  const dms = collect(reader, 'direct');
  proxy.refuse = true;
  proxy.cut();
  await waitFor(() => reader.state === 'reconnecting', 'reader reconnecting again');
  for (let i = 1; i <= 5; i++) await writer.send(reader.user, 'dm', { i });
  proxy.refuse = false;
  await waitFor(() => dms.length >= 5, 'the 5 direct messages');
  await sleep(200);
  assert.deepEqual(dms.map((m) => m.data.i), [1, 2, 3, 4, 5]);
});

test('reconnects after the server restarts; rooms are rejoined and the app told to reload', async () => {
  const first = await startServer();
  const port = first.port;
  const hc = client(first.ws, { name: 'Ada' });
  const room = await hc.join('r');
  const got = collect(room, 'message');
  const unrecovered = collect(room, 'unrecovered');
  const states = collect(hc, 'state');
  await room.publish('e', { n: 1 }, { echo: true });
  await waitFor(() => got.length === 1, 'first message');

  await first.stop();
  await waitFor(() => hc.state === 'reconnecting', 'reconnecting');
  assert.equal(states.find((s) => s[0] === 'reconnecting')[1].code, 1001);
  // Published while the server is down: queued, sent once it is back.
  const queued = room.publish('e', { n: 2 }, { echo: true });

  const second = await server({ port });
  await connected(hc);
  const ack = await queued;
  assert.equal(ack.duplicate, false);
  // A memory engine loses its rooms in a restart: a new epoch, so the
  // client says it could not recover and starts over.
  await waitFor(() => unrecovered.length === 1, 'unrecovered event');
  assert.notEqual(unrecovered[0].previousEpoch, unrecovered[0].epoch);
  await waitFor(() => got.length === 2, 'the queued message, echoed');
  assert.equal(got[1].data.n, 2);
  // Still joined without calling join again: another client's message.
  const other = client(second.ws, { name: 'Bob' });
  await other.publish('r', 'e', { n: 3 });
  await waitFor(() => got.length === 3, 'message after restart');
  assert.deepEqual(got.map((m) => m.data.n), [1, 2, 3]);
});

test('rooms of the token\'s subs appear without join() and recover after a reconnect', async () => {
  const secret = 'a-secret-of-at-least-16-bytes';
  const s = await server({ args: ['--jwt-secret', secret] });
  const proxy = await startProxy(s.addr);
  cleanup.push(() => proxy.close());
  const token = jwt(secret, { sub: 'subber', exp: Math.floor(Date.now() / 1000) + 600, rooms: ['feed'], subs: ['feed', 'secret'] });
  const reader = client(proxy.ws, { token });
  const appeared = collect(reader, 'room');
  const errors = collect(reader, 'error');
  await waitFor(() => appeared.length === 1, 'the subs room appears');
  const room = appeared[0];
  assert.equal(room.name, 'feed');
  assert.equal(room.joined, true);
  assert.equal(reader.rooms.get('feed'), room);
  assert.equal(await reader.join('feed'), room, 'join() finds the same room');
  await waitFor(() => errors.length === 1, 'the refused subs room is named');
  assert.equal(errors[0].code, 'forbidden');
  assert.equal(errors[0].room, 'secret');
  const got = collect(room, 'message');
  const writer = client(s.ws, { name: 'Writer' });
  await writer.publish('feed', 'n', { i: 0 });
  await waitFor(() => got.length === 1, 'first message');

  proxy.refuse = true;
  proxy.cut();
  await waitFor(() => reader.state === 'reconnecting', 'reader reconnecting');
  for (let i = 1; i <= 5; i++) await writer.publish('feed', 'n', { i });
  proxy.refuse = false;
  await waitFor(() => got.length >= 6, 'all 6 messages');
  // A marker after the missed ones: nothing arrives twice before it.
  await writer.publish('feed', 'n', { i: 6 });
  await waitFor(() => got.length >= 7, 'the marker');
  assert.deepEqual(got.map((m) => m.data.i), [0, 1, 2, 3, 4, 5, 6]);
  assert.equal(appeared.length, 1, 'the same room across the reconnect');
});

test('a server-side subscribe adds a room and an unsubscribe removes it, for good', async () => {
  const secret = 'a-secret-of-at-least-16-bytes';
  const s = await server({ args: ['--jwt-secret', secret] });
  const proxy = await startProxy(s.addr);
  cleanup.push(() => proxy.close());
  const token = jwt(secret, { sub: 'pushed', exp: Math.floor(Date.now() / 1000) + 600 });
  const hc = client(proxy.ws, { token });
  await connected(hc);
  const api = (path, body) =>
    fetch(`${s.http}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }).then((r) => r.json());
  const appeared = collect(hc, 'room');
  const gone = collect(hc, 'left');
  assert.equal((await api('/api/subscribe', { user: 'pushed', room: 'news' })).connections, 1);
  await waitFor(() => appeared.length === 1, 'the subscribed room appears');
  const room = appeared[0];
  assert.equal(room.name, 'news');
  assert.equal(hc.rooms.get('news'), room);
  const got = collect(room, 'message');
  await api('/api/publish', { room: 'news', event: 'e', data: 1 });
  await waitFor(() => got.length === 1, 'a message of the room');
  const roomLeft = collect(room, 'left');

  await api('/api/unsubscribe', { user: 'pushed', room: 'news' });
  await waitFor(() => gone.length === 1, 'the room is left');
  assert.equal(gone[0], room);
  assert.equal(roomLeft.length, 1);
  assert.equal(room.left, true);
  assert.equal(room.joined, false);
  assert.equal(hc.rooms.has('news'), false);

  // Not rejoined after a reconnect: a direct message sent after a message
  // of the room is the only one that arrives.
  proxy.refuse = true;
  proxy.cut();
  await waitFor(() => hc.state === 'reconnecting', 'reconnecting');
  proxy.refuse = false;
  await connected(hc);
  const all = collect(hc, 'message');
  await api('/api/publish', { room: 'news', event: 'e', data: 2 });
  await api('/api/send', { to: 'pushed', event: 'e', data: 'marker' });
  await waitFor(() => all.length >= 1, 'the direct message');
  assert.deepEqual(all.map((m) => m.data), ['marker']);
  assert.equal(got.length, 1);
});

test('a publish whose ack was lost is retried with the same msgId and delivered once', async () => {
  const s = await server();
  const proxy = await startProxy(s.addr);
  cleanup.push(() => proxy.close());
  const pub = client(proxy.ws, { name: 'Pub' });
  const sub = client(s.ws, { name: 'Sub' });
  const room = await sub.join('once');
  const got = collect(room, 'message');
  await connected(pub);

  proxy.mode = 'blackhole-down'; // the publish reaches the server, its ack does not come back
  const p = pub.publish('once', 'e', { text: 'exactly once' });
  await waitFor(() => got.length === 1, 'delivered to the subscriber');
  proxy.mode = 'pass';
  proxy.cut();
  const ack = await p;
  assert.equal(ack.duplicate, true, 'the retry was recognised as a duplicate');
  assert.equal(ack.msgId, got[0].msgId);
  await sleep(300);
  assert.equal(got.length, 1);
  assert.equal(pub.pending, 0);
});

test('a dead connection is found by the application ping', async () => {
  const s = await server();
  const proxy = await startProxy(s.addr);
  cleanup.push(() => proxy.close());
  const hc = client(proxy.ws, { name: 'Ada', pingInterval: 200, pingTimeout: 300 });
  const states = collect(hc, 'state');
  await connected(hc);
  const before = hc.connId;
  proxy.mode = 'blackhole';
  await waitFor(() => states.some((x) => x[0] === 'reconnecting'), 'reconnecting');
  assert.equal(states.find((x) => x[0] === 'reconnecting')[1].reason, 'no reply to ping');
  proxy.mode = 'pass';
  await waitFor(() => hc.state === 'connected' && hc.connId !== before, 'a new connection');
});

test('the offline queue is bounded and publishes time out', async () => {
  const s = await server();
  const proxy = await startProxy(s.addr);
  cleanup.push(() => proxy.close());
  const hc = client(proxy.ws, { name: 'Ada', maxQueue: 2 });
  await connected(hc);
  proxy.mode = 'blackhole';
  await assert.rejects(hc.publish('r', 'e', 1, { timeout: 200 }), { code: 'timeout' });
  proxy.refuse = true;
  proxy.mode = 'pass';
  proxy.cut();
  await waitFor(() => hc.state === 'reconnecting', 'reconnecting');
  const a = hc.publish('r', 'e', 1);
  const b = hc.publish('r', 'e', 2);
  await assert.rejects(hc.publish('r', 'e', 3), { code: 'queue_full' });
  proxy.refuse = false;
  const acks = await Promise.all([a, b]);
  assert.deepEqual(acks.map((x) => x.offset), [1, 2]);
});

test('no reconnect after 4001 until a new token; a token callback is asked again', async () => {
  const secret = 'a-secret-of-at-least-16-bytes';
  const s = await server({ args: ['--jwt-secret', secret, '--anonymous', 'false'] });
  const now = () => Math.floor(Date.now() / 1000);
  const hc = client(s.ws, { token: jwt(secret, { sub: 'ada', exp: now() + 1 }) });
  const states = collect(hc, 'state');
  await connected(hc);
  assert.equal(hc.user, 'ada');
  await waitFor(() => hc.state === 'closed', 'closed at expiry', 5000);
  assert.equal(states.at(-1)[1].code, 4001);
  await sleep(500);
  assert.equal(hc.state, 'closed', 'no reconnect with the expired token');
  hc.setToken(jwt(secret, { sub: 'ada', exp: now() + 60 }));
  await connected(hc);

  let asked = 0;
  const cb = client(s.ws, {
    token: () => {
      asked += 1;
      return jwt(secret, { sub: 'bob', exp: now() + (asked === 1 ? 1 : 60) });
    },
  });
  await connected(cb);
  const firstConn = cb.connId;
  await waitFor(() => asked === 2 && cb.state === 'connected' && cb.connId !== firstConn, 'reconnected with a fresh token', 5000);
});

test('no reconnect after a 4004 close (revoked); a 4005 reconnects', async () => {
  const fake = await closingServer(4004, 'user blocked');
  cleanup.push(() => fake.close());
  const hc = client(fake.ws);
  const states = collect(hc, 'state');
  await waitFor(() => states.some((x) => x[0] === 'closed'), 'closed');
  assert.equal(states.at(-1)[1].code, 4004);
  await sleep(600);
  assert.equal(fake.handshakes, 1);
  await assert.rejects(hc.publish('r', 'e', 1), { code: 'closed' });

  const other = await closingServer(4005, 'disconnected by the server');
  cleanup.push(() => other.close());
  client(other.ws);
  await waitFor(() => other.handshakes >= 2, 'reconnected after 4005');
});

test('no reconnect after a 1008 close', async () => {
  const fake = await closingServer(1008, 'forbidden');
  cleanup.push(() => fake.close());
  const hc = client(fake.ws);
  const states = collect(hc, 'state');
  await waitFor(() => states.some((x) => x[0] === 'closed'), 'closed');
  assert.equal(states.at(-1)[1].code, 1008);
  await sleep(600);
  assert.equal(fake.handshakes, 1);
  await assert.rejects(hc.publish('r', 'e', 1), { code: 'closed' });

  // Anything else is reconnected.
  const other = await closingServer(1011, 'oops');
  cleanup.push(() => other.close());
  const hc2 = client(other.ws);
  await waitFor(() => other.handshakes >= 3, 'reconnect attempts');
});
