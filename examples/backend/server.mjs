// An application backend for hubcast, with no dependencies (Node 20+):
// people sign in here with a name and get a session cookie; hubcast asks
// this server who a browser is (the `connect` hook reads the cookie),
// whether a message may be published in a `lobby`-like room (the
// `publish` hook, which also stores it), and answers the chat page's
// `rpc` calls; hubcast's webhooks land here too (`/hubcast/events`).
//
//   node examples/backend/server.mjs        (or examples/backend/run)
// GET /messages and GET /events show what it stored and received.
//
// Settings (environment): PORT (3000; 0 picks one), HOOK_SECRET (the
// [hooks] and [[webhooks]] secret in hubcast.toml), CHAT_URL (where the
// chat page is, http://localhost:8080/), DATA (a JSON-lines file the
// messages are appended to; none: kept in memory only).
//
// Every hook request is checked against its Hubcast-Signature before it
// is read (docs/hooks.md): a request without a valid one gets 401.
import { createServer } from 'node:http';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { appendFileSync } from 'node:fs';

const PORT = Number(process.env.PORT ?? 3000);
const SECRET = process.env.HOOK_SECRET ?? 'example-hook-secret-0123456789';
const CHAT_URL = process.env.CHAT_URL ?? 'http://localhost:8080/';
const DATA = process.env.DATA;

/** Session id -> {user, name}. */
const sessions = new Map();
/** Stored messages, oldest first: {room, user, event, data, msgId, at}. */
const messages = [];
/** Webhook events received, by id (a retried batch repeats ids). */
const events = new Map();
/** Words this backend refuses in a message (the publish hook's say). */
const REFUSED = ['spam'];

/** Hubcast-Signature check: t=<unix s>,v1=<hex HMAC-SHA256(secret, t.body)>. */
function verify(header, raw, toleranceS = 300) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? '');
  if (!m || Math.abs(Date.now() / 1000 - Number(m[1])) > toleranceS) return false;
  const want = createHmac('sha256', SECRET).update(`${m[1]}.`).update(raw).digest();
  return timingSafeEqual(want, Buffer.from(m[2], 'hex'));
}

function cookies(header) {
  const out = {};
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i).trim()] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}

/** A user id from a display name: lower case letters, digits, dashes. */
function userId(name) {
  const id = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 32);
  return id || `user-${randomBytes(3).toString('hex')}`;
}

function text(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

/** The hook requests (PROTOCOL.md section 9). */
function hook(body) {
  switch (body.hook) {
    case 'connect': {
      const s = sessions.get(cookies(body.headers?.cookie).session);
      if (!s) return { error: { code: 'unauthorized', message: 'sign in first' } };
      // A day; hubcast closes the connection with 4001 when it passes.
      return { user: s.user, name: s.name, rooms: ['lobby', 'chat.*'], subs: ['lobby'], expiresAt: Math.floor(Date.now() / 1000) + 86400 };
    }
    case 'join':
      return { allow: true };
    case 'publish': {
      const said = JSON.stringify(body.data ?? null).toLowerCase();
      const bad = REFUSED.find((w) => said.includes(w));
      if (bad) return { allow: false, message: `"${bad}" is not allowed here` };
      const m = { room: body.room, user: body.user, event: body.event, data: body.data, msgId: body.msgId, at: Date.now() };
      // A retried publish (same msgId) is stored once.
      if (!messages.some((x) => x.msgId === m.msgId && x.room === m.room)) {
        messages.push(m);
        if (DATA) appendFileSync(DATA, `${JSON.stringify(m)}\n`);
      }
      return { allow: true };
    }
    case 'rpc':
      if (body.method === 'messages.recent') {
        const room = body.data?.room;
        if (typeof room !== 'string') return { error: { code: 'bad_request', message: 'data.room must be a string' } };
        return { data: messages.filter((m) => m.room === room).slice(-50) };
      }
      if (body.method === 'whoami') return { data: { user: body.user } };
      return { error: { code: 'not_found', message: `no method ${body.method}` } };
    default:
      return { error: { code: 'bad_request', message: `unknown hook ${body.hook}` } };
  }
}

function send(res, status, body, headers = {}) {
  const json = typeof body !== 'string';
  res.writeHead(status, { 'content-type': json ? 'application/json' : 'text/html; charset=utf-8', ...headers });
  res.end(json ? JSON.stringify(body) : body);
}

const page = (msg = '') => `<!doctype html><meta charset="utf-8"><title>Sign in</title>
<style>body{font:16px system-ui;max-width:24rem;margin:4rem auto}input,button{font:inherit;padding:.4rem}</style>
<h1>Sign in to the chat</h1>${msg ? `<p>${text(msg)}</p>` : ''}
<form method="post" action="/login"><input id="name" name="name" placeholder="Your name" required maxlength="40" autofocus>
<button type="submit">Sign in</button></form>
<p>The chat page at <a href="${text(CHAT_URL)}">${text(CHAT_URL)}</a> knows you by this site's session cookie.</p>`;

const server = createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', (c) => {
    size += c.length;
    if (size > 1 << 20) req.destroy();
    else chunks.push(c);
  });
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const url = new URL(req.url, 'http://backend');
    try {
      if (req.method === 'GET' && url.pathname === '/') return send(res, 200, page());
      if (req.method === 'POST' && url.pathname === '/login') {
        const name = new URLSearchParams(raw.toString()).get('name')?.trim().slice(0, 40);
        if (!name) return send(res, 400, page('Choose a name.'));
        const id = randomBytes(18).toString('base64url');
        sessions.set(id, { user: userId(name), name });
        // Cookies are per host, not per port: hubcast on localhost:8080
        // receives this one with the chat page's WebSocket handshake.
        const next = new URL(CHAT_URL);
        next.searchParams.set('signin', 'cookie');
        return send(res, 303, '', { 'set-cookie': `session=${id}; Path=/; HttpOnly; SameSite=Lax`, location: next.toString() });
      }
      if (req.method === 'POST' && (url.pathname === '/hubcast/hooks' || url.pathname === '/hubcast/events')) {
        if (!verify(req.headers['hubcast-signature'], raw)) return send(res, 401, { error: 'bad signature' });
        const body = JSON.parse(raw.toString());
        if (url.pathname === '/hubcast/events') {
          for (const e of body.events ?? []) events.set(e.id, e);
          return send(res, 200, { ok: true });
        }
        return send(res, 200, hook(body));
      }
      if (req.method === 'GET' && url.pathname === '/messages') {
        const room = url.searchParams.get('room');
        return send(res, 200, room ? messages.filter((m) => m.room === room) : messages);
      }
      if (req.method === 'GET' && url.pathname === '/events') return send(res, 200, [...events.values()]);
      return send(res, 404, { error: 'not found' });
    } catch (e) {
      return send(res, 400, { error: String(e?.message ?? e) });
    }
  });
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`backend listening on http://127.0.0.1:${server.address().port} (chat page: ${CHAT_URL})`);
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => server.close(() => process.exit(0)));
