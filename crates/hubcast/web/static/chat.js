// The chat page: the hubcast client in use. Rooms with history and live
// messages, presence with online/away/busy, direct messages, and a
// connection indicator; what was missed while offline is recovered by the
// client, and a room whose gap could not be recovered is reloaded.
import { Hubcast, uuidv7 } from '/client/hubcast.js';

const $ = (id) => document.getElementById(id);
const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
const store = {
  get: (k) => localStorage.getItem(`hubcast.${k}`),
  set: (k, v) => (v === null || v === undefined ? localStorage.removeItem(`hubcast.${k}`) : localStorage.setItem(`hubcast.${k}`, v)),
};

let hc = null;
/** Conversations by key: `#room` or `@user` (DMs with that user). */
const convs = new Map();
let current = null;
/** Display names by user id, from presence and messages. */
const names = new Map();
/** Every user id this page has been (an anonymous user gets a new one on
 * each connection). */
const me = new Set();

function conv(key) {
  let c = convs.get(key);
  if (!c) {
    c = { key, kind: key.startsWith('#') ? 'room' : 'dm', id: key.slice(1), msgs: [], ids: new Set(), unread: 0, room: null, epoch: null };
    convs.set(key, c);
  }
  return c;
}

// ---- connection -----------------------------------------------------------

function start({ name, token, room }) {
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  $('status').hidden = false;
  hc = new Hubcast(wsUrl, token ? { token } : { name });
  window.hubcast = hc; // for the console (and the browser tests)
  hc.on('state', showState);
  hc.on('welcome', (w) => {
    names.set(w.user, w.name ?? w.user);
    me.add(w.user);
    $('me').hidden = false;
    $('me').textContent = `Signed in as ${w.name ?? w.user}`;
    if (!hc._dmHistoryLoaded) {
      hc._dmHistoryLoaded = true;
      loadDirectHistory().catch(() => {});
    }
  });
  hc.on('direct', (env) => {
    if (env.eventType !== 'dm') return;
    addMessage(conv(`@${env.source}`), env);
  });
  hc.on('unrecovered', (room) => {
    const c = convs.get(`#${room.name}`);
    if (c) reload(c, 'Some messages could not be recovered after the reconnect; reloaded the room.');
  });
  const saved = JSON.parse(store.get('rooms') || '[]');
  const rooms = [...new Set([room, ...saved].filter(Boolean))];
  for (const r of rooms) joinRoom(r, r === room);
}

function showState(state, info) {
  const el = $('conn');
  el.dataset.state = state;
  let text = { connecting: 'Connecting…', connected: 'Connected', reconnecting: 'Reconnecting…', closed: 'Disconnected' }[state];
  if (state === 'reconnecting' && info.offline) text = 'Offline: waiting for the network';
  else if (state === 'reconnecting' && info.delay) text = `Reconnecting in ${Math.ceil(info.delay / 1000)} s`;
  if (state === 'closed' && info.code === 4001) text = 'Session expired: sign in again';
  else if (state === 'closed' && info.code && info.code !== 1000) text = `Disconnected (${info.code}${info.reason ? `: ${info.reason}` : ''})`;
  $('conn-text').textContent = text;
  el.title = info.reason || '';
}

// ---- rooms ----------------------------------------------------------------

async function joinRoom(name, select = true) {
  const c = conv(`#${name}`);
  if (c.room && !c.room.left) {
    if (select) show(c.key);
    return;
  }
  renderLists();
  if (select) show(c.key);
  let room;
  try {
    room = await hc.join(name);
  } catch (e) {
    convs.delete(c.key);
    saveRooms();
    renderLists();
    if (current === c.key) show(firstRoom());
    notice(`Could not join ${name}: ${e.reason || e.message}`);
    return;
  }
  c.room = room;
  saveRooms();
  room.on('message', (env) => addMessage(c, env));
  room.on('members', () => {
    for (const m of room.members.values()) names.set(m.user, m.name);
    if (current === c.key) renderMembers();
  });
  for (const m of room.members.values()) names.set(m.user, m.name);
  if (current === c.key) renderMembers();
  await reload(c);
}

/** Loads the latest messages of a room (on join, and when the client says
 * the gap after a reconnect could not be filled). */
async function reload(c, why) {
  if (!c.room) return;
  let page;
  try {
    page = await c.room.history({ limit: 100 });
  } catch {
    return;
  }
  if (c.epoch !== page.epoch) {
    c.msgs = c.msgs.filter((m) => m.epoch === page.epoch || m.pending);
    c.ids = new Set(c.msgs.map((m) => m.msgId));
    c.epoch = page.epoch;
  }
  for (const env of page.messages) addMessage(c, env, true);
  if (why && current === c.key) notice(why);
  if (current === c.key) renderMessages();
}

async function leaveRoom(c) {
  convs.delete(c.key);
  saveRooms();
  try {
    await c.room?.leave();
  } catch {
    // disconnected: the room is not rejoined
  }
  show(firstRoom());
  renderLists();
}

function firstRoom() {
  for (const k of convs.keys()) if (k.startsWith('#')) return k;
  return null;
}

function saveRooms() {
  store.set('rooms', JSON.stringify([...convs.keys()].filter((k) => k.startsWith('#')).map((k) => k.slice(1))));
}

// ---- direct messages --------------------------------------------------------

async function loadDirectHistory() {
  const page = await hc.history(`@${hc.user}`, { limit: 100 });
  for (const env of page.messages) if (env.eventType === 'dm') addMessage(conv(`@${env.source}`), env, true);
  renderLists();
}

// ---- messages -------------------------------------------------------------

/** Adds one message to a conversation, once (by msgId), in offset order
 * (rooms) or time order (direct messages, which come from two streams). */
function addMessage(c, env, quiet = false) {
  const pendingIdx = c.msgs.findIndex((m) => m.pending && m.msgId === env.msgId);
  if (pendingIdx >= 0) c.msgs.splice(pendingIdx, 1);
  else if (c.ids.has(env.msgId)) return;
  c.ids.add(env.msgId);
  if (c.kind === 'room' && c.epoch === null) c.epoch = env.epoch;
  const key = (m) => (c.kind === 'room' && !m.pending ? m.offset : Number.MAX_SAFE_INTEGER);
  let i = c.msgs.length;
  if (c.kind === 'room') {
    while (i > 0 && key(c.msgs[i - 1]) > env.offset) i--;
  } else {
    while (i > 0 && c.msgs[i - 1].timestamp > env.timestamp) i--;
  }
  c.msgs.splice(i, 0, env);
  if (current === c.key) renderMessages();
  else if (!quiet && !me.has(env.source)) {
    c.unread += 1;
    renderLists();
  } else renderLists();
}

async function sendText(text) {
  const c = convs.get(current);
  if (!c || !text.trim()) return;
  const msgId = uuidv7();
  const data = { text };
  const local = { msgId, pending: true, source: hc.user, timestamp: Date.now(), data, offset: Infinity };
  c.msgs.push(local);
  c.ids.add(msgId);
  renderMessages();
  try {
    if (c.kind === 'room') {
      await hc.publish(c.id, 'chat.message', data, { msgId, echo: true });
      // The echo replaces the pending line, in its place by offset.
    } else {
      const ack = await hc.send(c.id, 'dm', data, { msgId });
      local.pending = false;
      local.offset = ack.offset;
      local.timestamp = Date.now();
      renderMessages();
    }
  } catch (e) {
    local.failed = e.reason || e.message;
    renderMessages();
  }
}

// ---- rendering --------------------------------------------------------------

function show(key) {
  current = key;
  const c = key && convs.get(key);
  $('title').textContent = !c ? 'No room' : c.kind === 'room' ? `# ${c.id}` : `Direct: ${names.get(c.id) ?? c.id}`;
  $('leave').hidden = !c || c.kind !== 'room';
  $('compose').hidden = !c;
  $('notice').hidden = true;
  if (c) c.unread = 0;
  renderLists();
  renderMessages();
  renderMembers();
  if (c) $('text').focus();
}

function notice(text) {
  const n = $('notice');
  n.textContent = text;
  n.hidden = false;
  clearTimeout(notice.t);
  notice.t = setTimeout(() => (n.hidden = true), 8000);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const ch of children) if (ch !== null && ch !== undefined) e.append(ch);
  return e;
}

function renderLists() {
  const rooms = $('rooms');
  const dms = $('dms');
  rooms.replaceChildren();
  dms.replaceChildren();
  for (const c of convs.values()) {
    const li = el('li', { class: c.key === current ? 'active' : '', 'data-key': c.key },
      c.kind === 'room' ? `# ${c.id}` : names.get(c.id) ?? c.id,
      el('span', { class: 'unread' }, c.unread ? String(c.unread) : ''));
    li.onclick = () => show(c.key);
    (c.kind === 'room' ? rooms : dms).append(li);
  }
}

function renderMessages() {
  const list = $('messages');
  const c = current && convs.get(current);
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  if (!c) {
    list.replaceChildren(el('li', { class: 'empty' }, 'Join a room to start.'));
    return;
  }
  if (!c.msgs.length) {
    list.replaceChildren(el('li', { class: 'empty' }, c.kind === 'room' ? 'No messages yet. Say hi!' : 'No messages yet.'));
    return;
  }
  list.replaceChildren(...c.msgs.map((m) => {
    const mine = me.has(m.source);
    // The sender is the envelope's `source` (set by the server), named as
    // the server names it (welcome, presence); never by the message's data.
    const who = mine ? 'You' : names.get(m.source) ?? m.source;
    const time = new Date(m.timestamp).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const cls = ['msg', mine ? 'mine' : '', m.pending ? 'pending' : '', m.failed ? 'failed' : ''].join(' ');
    return el('li', { class: cls, 'data-msgid': m.msgId, 'data-offset': String(m.offset) },
      el('div', { class: 'meta' }, el('span', { class: 'who' }, who),
        el('time', { dateTime: new Date(m.timestamp).toISOString() }, m.pending ? (m.failed ? `not sent: ${m.failed}` : 'sending…') : time)),
      el('p', { class: 'text' }, typeof m.data?.text === 'string' ? m.data.text : JSON.stringify(m.data)));
  }));
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderMembers() {
  const list = $('members');
  const c = current && convs.get(current);
  if (!c || c.kind !== 'room' || !c.room) {
    list.replaceChildren();
    $('count').textContent = '';
    return;
  }
  const members = [...c.room.members.values()].sort((a, b) => (a.name || a.user).localeCompare(b.name || b.user));
  $('count').textContent = `(${c.room.total})`;
  list.replaceChildren(...members.map((m) => {
    const self = m.user === hc.user;
    const li = el('li', { class: self ? 'me-row' : '', 'data-user': m.user, 'data-status': m.status, title: self ? '' : 'Send a direct message' },
      el('span', { class: 'dot' }), el('span', { class: 'name' }, m.name || m.user), el('span', { class: 'status' }, m.status));
    if (!self) li.onclick = () => {
      conv(`@${m.user}`);
      show(`@${m.user}`);
    };
    return li;
  }));
}

// ---- wiring -----------------------------------------------------------------

$('login-form').onsubmit = (ev) => {
  ev.preventDefault();
  const name = $('name').value.trim();
  const token = $('token').value.trim();
  const room = $('first-room').value.trim() || 'lobby';
  if (!name && !token) {
    $('login-error').textContent = 'Choose a name (or paste a token).';
    $('login-error').hidden = false;
    return;
  }
  store.set('name', name || null);
  sessionStorage.setItem('hubcast.token', token);
  start({ name, token, room });
};

$('join-form').onsubmit = (ev) => {
  ev.preventDefault();
  const name = $('join-name').value.trim();
  if (!name) return;
  $('join-name').value = '';
  joinRoom(name, true);
};

$('compose').onsubmit = (ev) => {
  ev.preventDefault();
  const text = $('text').value;
  $('text').value = '';
  sendText(text);
};

$('leave').onclick = () => {
  const c = convs.get(current);
  if (c && c.kind === 'room') leaveRoom(c);
};

$('status').onchange = () => {
  hc?.setStatus($('status').value).catch((e) => notice(`Status not set: ${e.reason || e.message}`));
};

$('logout').onclick = () => {
  hc?.close();
  store.set('name', null);
  store.set('cookie', null);
  store.set('rooms', null);
  sessionStorage.removeItem('hubcast.token');
  location.reload();
};

// Signed in by the application's backend (its session cookie, which the
// handshake carries to hubcast's `connect` hook; examples/backend): no
// name and no token, the backend says who this is.
if (new URLSearchParams(location.search).get('signin') === 'cookie') {
  store.set('cookie', '1');
  history.replaceState(null, '', location.pathname);
}
// Signed in before in this browser: connect again.
const savedName = store.get('name');
const savedToken = sessionStorage.getItem('hubcast.token');
if (store.get('cookie')) {
  const rooms = JSON.parse(store.get('rooms') || '[]');
  start({ room: rooms[0] || 'lobby' });
} else if (savedName || savedToken) {
  const rooms = JSON.parse(store.get('rooms') || '[]');
  start({ name: savedName, token: savedToken, room: rooms[0] || 'lobby' });
} else {
  $('name').focus();
}
