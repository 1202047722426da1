// A busy room's presence (protocol extension, docs/protocol.md "Presence
// pacing"): a join storm's events come as `batch` or `sync` frames, and the
// JavaScript client keeps its member list whole from them, emitting each
// batched event as a 1.1 `presence` event.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';

import { Hubcast } from '../client/hubcast.js';
import { startServer, waitFor } from './helpers.mjs';

const JOINERS = 400;
const fast = { minDelay: 50, maxDelay: 300, pingInterval: 60000, connectTimeout: 5000 };
const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

test('a join storm: batched presence events keep the member list whole', async () => {
  const s = await startServer({ args: ['--handshakes-per-ip-per-sec', '0'] });
  cleanup.push(() => s.stop());
  const watcher = new Hubcast(s.ws, { ...fast, name: 'watcher' });
  cleanup.push(() => watcher.close());
  const room = await watcher.join('storm');
  const joins = new Set();
  let syncs = 0;
  room.on('presence', (e) => {
    if (e.action === 'join') joins.add(e.user);
    if (e.action === 'sync') syncs += 1;
  });
  // A plain socket in the room shows the frames as the server sent them.
  const raw = new WebSocket(s.ws, 'hubcast.v1');
  const frames = [];
  raw.onmessage = (m) => frames.push(JSON.parse(m.data));
  await new Promise((resolve) => (raw.onopen = resolve));
  raw.send(JSON.stringify({ type: 'join', room: 'storm', id: 1 }));
  await waitFor(() => frames.some((f) => f.type === 'joined'), 'the plain socket joined');
  cleanup.push(() => raw.close());

  const joiners = [];
  for (let i = 0; i < JOINERS; i++) {
    const hc = new Hubcast(s.ws, { ...fast, name: `j${i}` });
    cleanup.push(() => hc.close());
    joiners.push(hc);
  }
  await Promise.all(joiners.map((hc) => hc.join('storm')));
  const users = joiners.map((hc) => hc.user);
  await waitFor(() => users.every((u) => room.members.has(u)), 'every joiner in the member list', 30000);
  assert.equal(room.members.size, JOINERS + 2, 'the watcher, the plain socket and the joiners');
  const paced = frames.filter((f) => f.type === 'presence' && (f.action === 'batch' || f.action === 'sync'));
  assert.ok(paced.length > 0, 'the storm was paced');
  for (const f of paced.filter((f) => f.action === 'batch')) {
    assert.ok(f.events.length > 0);
    for (const e of f.events) assert.deepEqual(Object.keys(e).sort(), ['action', 'name', 'status', 'user']);
  }
  // Without a `sync`, every join came as its own event.
  if (syncs === 0) assert.ok(users.every((u) => joins.has(u)), 'each batched join emitted');
  const frameCount = frames.filter((f) => f.type === 'presence').length;
  console.log(`${JOINERS} joins: the plain socket got ${frameCount} presence frames (${paced.length} batch/sync); the client ${joins.size} join events, ${syncs} syncs`);
});

/** A WebSocket stand-in whose server is `script(frame, reply)`: each frame
 * the client sends is handed to it, and it answers with `reply(frame)`. */
function scriptedSocket(script) {
  return class {
    constructor() {
      this.readyState = 1;
      queueMicrotask(() => this.#reply({ type: 'welcome', connId: 'c1', user: 'me', node: 'n1', heartbeat: 60 }));
    }
    #reply(f) {
      this.onmessage?.({ data: JSON.stringify(f) });
    }
    send(text) {
      const f = JSON.parse(text);
      queueMicrotask(() => script(f, (r) => this.#reply(r)));
    }
    close() {
      this.readyState = 3;
    }
  };
}

// The server reads a member list before it queues the reply, and changes
// fanned out in between arrive first: the list is brought up to date
// with them, so the client's members are never behind the server's.
test('changes that overtake a member list are not lost to it', async () => {
  const script = (f, reply) => {
    if (f.type === 'join') {
      // `late` joins and `gone` leaves after the list was read.
      reply({ type: 'presence', room: 'r', action: 'join', user: 'late', name: 'Late', status: 'online' });
      reply({ type: 'presence', room: 'r', action: 'leave', user: 'gone' });
      reply({
        type: 'joined', id: f.id, room: 'r', epoch: 'e', offset: 0,
        members: [{ user: 'gone', name: 'Gone', status: 'online', connections: 1 }], total: 1,
      });
    } else if (f.type === 'presence') {
      reply({ type: 'presence', room: 'r', action: 'batch', events: [
        { action: 'join', user: 'x', name: 'X', status: 'online' },
        { action: 'leave', user: 'late', name: 'Late', status: 'online' },
      ] });
      reply({
        type: 'presence', id: f.id, room: 'r',
        members: [{ user: 'late', name: 'Late', status: 'online', connections: 1 }], total: 1,
      });
    }
  };
  const hc = new Hubcast('ws://scripted/ws', { ...fast, WebSocket: scriptedSocket(script) });
  cleanup.push(() => hc.close());
  const room = await hc.join('r');
  assert.deepEqual([...room.members.keys()], ['late'], 'the join list caught up');
  assert.equal(room.total, 1);
  const list = await room.presence();
  assert.deepEqual([...room.members.keys()], ['x'], 'the fetched list caught up');
  assert.deepEqual(list.map((m) => m.user), ['x']);
  // Once nothing is on its way, changes are applied and not kept.
  room._onPresence({ type: 'presence', room: 'r', action: 'join', user: 'y', name: 'Y', status: 'online' });
  assert.deepEqual([...room.members.keys()].sort(), ['x', 'y']);
});
