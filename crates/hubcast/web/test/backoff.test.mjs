// The reconnect schedule, against a fake WebSocket (no server needed to
// fail on demand): full jitter under a cap that doubles per attempt up to
// maxDelay, and back to the first cap after a stable connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Hubcast } from '../client/hubcast.js';
import { waitFor } from './helpers.mjs';

class FakeSocket {
  static accept = false;
  static opened = 0;
  constructor() {
    FakeSocket.opened += 1;
    setTimeout(() => {
      if (FakeSocket.accept) {
        this.onmessage?.({ data: JSON.stringify({ type: 'welcome', protocol: 1, connId: `c${FakeSocket.opened}`, user: 'u', node: 'n', heartbeat: 25 }) });
      } else {
        this.onclose?.({ code: 1006, reason: '' });
      }
    }, 1);
  }
  send() {}
  close() {
    setTimeout(() => this.onclose?.({ code: 1000, reason: '' }), 1);
  }
  fail() {
    this.onclose?.({ code: 1011, reason: 'boom' });
  }
}

test('backoff: full jitter under a doubling cap, reset after a stable connection', async () => {
  const minDelay = 10;
  const maxDelay = 80;
  let current = null;
  class Tracked extends FakeSocket {
    constructor(...a) {
      super(...a);
      current = this;
    }
  }
  const hc = new Hubcast('ws://fake/ws', { WebSocket: Tracked, minDelay, maxDelay, stableAfter: 50, watchNetwork: false });
  const delays = [];
  hc.on('state', (s, info) => s === 'reconnecting' && typeof info.delay === 'number' && delays.push(info));
  await waitFor(() => delays.length >= 12, '12 failed attempts');
  for (const d of delays.slice(0, 12)) {
    const cap = Math.min(maxDelay, minDelay * 2 ** (d.attempt - 1));
    assert.ok(d.delay >= 0 && d.delay <= cap, `attempt ${d.attempt}: ${d.delay} > ${cap}`);
  }
  assert.ok(delays.slice(4, 12).every((d) => d.delay <= maxDelay), 'capped');
  assert.ok(new Set(delays.map((d) => d.delay)).size > 3, 'jittered, not fixed');

  // A connection that stays up longer than stableAfter resets the schedule.
  FakeSocket.accept = true;
  await waitFor(() => hc.state === 'connected', 'connected');
  await new Promise((r) => setTimeout(r, 80));
  delays.length = 0;
  FakeSocket.accept = false;
  current.fail();
  await waitFor(() => delays.length >= 1, 'reconnecting again');
  assert.equal(delays[0].attempt, 1);
  assert.ok(delays[0].delay <= minDelay, `${delays[0].delay} after a reset`);
  assert.equal(delays[0].code, 1011);
  hc.close();
});
