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
