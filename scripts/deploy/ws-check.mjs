// One end-to-end check of a deployment, for scripts/test-deploy: a
// WebSocket client joins a room at one address, a message is published
// through the HTTP API at another, and the client must receive exactly
// that message. Exit 0 and one line saying which node served the
// WebSocket, or exit 1 naming the step that failed.
//
//   node ws-check.mjs WS_URL API_URL API_KEY [ROOM]
//
// WS_URL carries its token (`?token=`); the Origin header is the WebSocket
// URL's own origin, as a browser on a page served by that host sends it.
const [wsUrl, apiUrl, apiKey, room = `deploy.check.${process.pid}`] = process.argv.slice(2);
if (!wsUrl || !apiUrl || !apiKey) {
  console.error('usage: ws-check.mjs WS_URL API_URL API_KEY [ROOM]');
  process.exit(2);
}

const fail = (step, detail) => {
  console.error(`ws-check: ${step}: ${detail}`);
  process.exit(1);
};
setTimeout(() => fail('timeout', 'no result within 15 s'), 15000).unref();

const nonce = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
const ws = new WebSocket(wsUrl);
let node = '?';
ws.addEventListener('error', (e) => fail('websocket', e.message ?? 'connection error'));
ws.addEventListener('close', (e) => fail('websocket', `closed with ${e.code} ${e.reason}`));
ws.addEventListener('message', async (ev) => {
  let frame;
  try {
    frame = JSON.parse(ev.data);
  } catch {
    fail('websocket', `not JSON: ${ev.data}`);
  }
  if (frame.type === 'welcome') {
    node = frame.node;
    ws.send(JSON.stringify({ type: 'join', room, id: 1 }));
  } else if (frame.type === 'joined') {
    // Joined before the publish, so the message must arrive.
    const res = await fetch(`${apiUrl}/api/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ room, event: 'deploy.check', data: { nonce } }),
    }).catch((e) => fail('publish', e.message));
    const body = await res.text();
    if (res.status !== 200) fail('publish', `${res.status} ${body}`);
  } else if (frame.type === 'message') {
    if (frame.room !== room || frame.data?.nonce !== nonce) {
      fail('message', `unexpected ${ev.data}`);
    }
    console.log(`ws-check: the WebSocket on node ${node} got the message published through ${apiUrl}`);
    process.exit(0);
  } else if (frame.type === 'error') {
    fail('websocket', ev.data);
  }
});
