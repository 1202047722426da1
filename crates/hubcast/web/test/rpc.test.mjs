// The browser client's `rpc` against a real hubcast (the binary) whose
// `[hooks]` point at a backend this test starts: the backend checks
// Hubcast-Signature on every request (the receiver code of docs/hooks.md)
// and answers with data or its own error.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';

import { Hubcast, HubcastError } from '../client/hubcast.js';
import { startServer, waitFor } from './helpers.mjs';

const SECRET = 'node-test-secret-0123';
const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

/** docs/hooks.md's receiver check. */
function verify(secret, header, rawBody, toleranceS = 300) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? '');
  if (!m || Math.abs(Date.now() / 1000 - Number(m[1])) > toleranceS) return false;
  const want = createHmac('sha256', secret).update(`${m[1]}.`).update(rawBody).digest();
  return timingSafeEqual(want, Buffer.from(m[2], 'hex'));
}

test('rpc resolves with the backend\'s data and rejects with its error', async () => {
  let bad = 0;
  const seen = [];
  const backend = createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const raw = Buffer.concat(chunks);
    if (!verify(SECRET, req.headers['hubcast-signature'], raw)) {
      bad++;
      res.writeHead(401).end();
      return;
    }
    const body = JSON.parse(raw);
    seen.push(body);
    const answer = body.method === 'add'
      ? { data: body.data.a + body.data.b }
      : { error: { code: 'unknown_method', message: `no ${body.method}` } };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
  });
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  cleanup.push(() => new Promise((r) => backend.close(r)));
  const dir = mkdtempSync(path.join(tmpdir(), 'hubcast-rpc-'));
  const file = path.join(dir, 'hooks.toml');
  writeFileSync(file, `[hooks]\nurl = "http://127.0.0.1:${backend.address().port}/hooks"\nsecret = "${SECRET}"\nrpc = true\n`);
  const s = await startServer({ args: ['--config', file] });
  cleanup.push(() => s.stop());

  const hc = new Hubcast(s.ws, { pingInterval: 60000 });
  cleanup.push(() => hc.close());
  await waitFor(() => hc.state === 'connected', 'connected');
  assert.equal(await hc.rpc('add', { a: 2, b: 3 }), 5);
  await assert.rejects(hc.rpc('nope', {}), (e) => e instanceof HubcastError && e.code === 'unknown_method' && e.message.includes('no nope'));
  await assert.rejects(hc.rpc('bad method', {}), (e) => e.code === 'bad_request');
  assert.equal(bad, 0, 'every request was signed');
  assert.equal(seen.length, 2);
  assert.equal(seen[0].hook, 'rpc');
  assert.equal(seen[0].user, hc.user);
  assert.equal(seen[0].conn, hc.connId);
});
