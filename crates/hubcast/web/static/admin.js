// The operator dashboard: polls this node's /api/stats, /api/rooms and
// /api/events, and the cluster's /api/users/blocked, once a second and
// draws the last five minutes on canvases; its user controls disconnect,
// block and unblock a user through the server API.
// No chart library: a few lines of canvas drawing do.

const $ = (id) => document.getElementById(id);
const POINTS = 300;
const COLORS = { conns: '#3b5bdb', rooms: '#2f9e44', pub: '#f08c00', del: '#ae3ec9' };

let key = sessionStorage.getItem('hubcast.apiKey');
let timer = null;
let last = null;
let lastEvent = 0;
const series = { conns: [], rooms: [], pub: [], del: [] };
const events = [];

async function api(path, method = 'GET', payload = undefined) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  if (payload !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, cache: 'no-store', body: payload === undefined ? undefined : JSON.stringify(payload) });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body.error?.message || `HTTP ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

async function signIn(k) {
  key = k;
  try {
    await api('/api/stats');
  } catch (e) {
    $('login-error').textContent = e.status === 401 || e.status === 403 ? `Refused: ${e.message}` : `Cannot reach the server: ${e.message}`;
    $('login-error').hidden = false;
    return;
  }
  sessionStorage.setItem('hubcast.apiKey', k);
  $('login').hidden = true;
  $('dash').hidden = false;
  $('logout').hidden = false;
  tick();
  timer = setInterval(tick, 1000);
}

function signOut(message) {
  clearInterval(timer);
  sessionStorage.removeItem('hubcast.apiKey');
  key = null;
  $('dash').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  setConn('closed', 'Signed out');
  if (message) {
    $('login-error').textContent = message;
    $('login-error').hidden = false;
  }
}

function setConn(state, text) {
  $('conn').dataset.state = state;
  $('conn-text').textContent = text;
}

const fmt = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : String(Math.round(n)));
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

function push(name, v) {
  const s = series[name];
  s.push(v);
  if (s.length > POINTS) s.shift();
}

async function tick() {
  let stats, rooms, evs, blocked;
  try {
    [stats, rooms, evs, blocked] = await Promise.all([api('/api/stats'), api('/api/rooms?limit=50'), api(`/api/events?after=${lastEvent}&limit=100`), api('/api/users/blocked')]);
  } catch (e) {
    if (e.status === 401 || e.status === 403) return signOut(`Signed out: ${e.message}`);
    setConn('reconnecting', `Server unreachable (${e.message})`);
    return;
  }
  setConn('connected', 'Live');
  const now = performance.now();
  // Per-second rates from the counters' change since the last poll.
  let pub = 0, del = 0;
  if (last && now > last.t) {
    const dt = (now - last.t) / 1000;
    pub = Math.max(0, stats.messages.published - last.published) / dt;
    del = Math.max(0, stats.messages.delivered - last.delivered) / dt;
  }
  last = { t: now, published: stats.messages.published, delivered: stats.messages.delivered };
  push('conns', stats.connections.total);
  push('rooms', stats.rooms);
  push('pub', pub);
  push('del', del);

  $('node').textContent = `node ${stats.node} · ${stats.broker}`;
  $('connections').textContent = fmt(stats.connections.total);
  $('transports').textContent = `ws ${stats.connections.ws} · sse ${stats.connections.sse} · poll ${stats.connections.poll}`;
  $('rooms-count').textContent = fmt(rooms.total);
  $('members').textContent = `${fmt(stats.members)} memberships`;
  $('pub-rate').textContent = fmt(pub);
  $('published').textContent = `${fmt(stats.messages.published)} in all`;
  $('del-rate').textContent = fmt(del);
  $('delivered').textContent = `${fmt(stats.messages.delivered)} in all`;
  $('uptime').textContent = duration(stats.uptimeSeconds);
  $('broker').textContent = `${stats.broker} engine`;

  $('rooms-total').textContent = `(${rooms.total})`;
  $('rooms-table').replaceChildren(...rooms.rooms.map((r) => row([r.room, null], [String(r.members), 'num'])));

  for (const e of evs.events.reverse()) {
    // The server keeps one event per connection, kind and code, sending it
    // again (count one more) on a repeat: it replaces the row shown.
    const earlier = events.findIndex((x) => x.conn === e.conn && x.kind === e.kind && x.code === e.code);
    if (earlier >= 0) events.splice(earlier, 1);
    events.unshift(e);
    lastEvent = Math.max(lastEvent, e.seq);
  }
  events.length = Math.min(events.length, 200);
  $('events-table').replaceChildren(...(events.length
    ? events.map((e) => {
      const tr = row([new Date(e.time).toLocaleTimeString(), null], [(e.closeCode ? `${e.code} (${e.closeCode})` : e.code) + (e.count > 1 ? ` ×${e.count}` : ''), 'code'], [e.user, null], [e.message, null]);
      tr.className = e.kind;
      return tr;
    })
    : [row(['Nothing yet: errors sent to clients and connections closed for a reason (slow consumer, heartbeat, flooding) appear here.', null])]));

  showBlocked(blocked.users);

  draw($('chart-conns'), [['conns', COLORS.conns], ['rooms', COLORS.rooms]]);
  draw($('chart-msgs'), [['pub', COLORS.pub], ['del', COLORS.del]]);
}

/** The blocked users' table, one row per user with an Unblock button. */
function showBlocked(users) {
  $('blocked-total').textContent = `(${users.length} blocked)`;
  $('blocked-table').replaceChildren(...(users.length
    ? users.map((u) => {
      const tr = row([u.user, null], [u.until === null ? 'until unblocked' : new Date(u.until * 1000).toLocaleString(), null]);
      tr.dataset.user = u.user;
      const td = document.createElement('td');
      const b = document.createElement('button');
      b.textContent = 'Unblock';
      b.className = 'unblock';
      b.onclick = () => control(`Unblocked ${u.user}`, `/api/users/${encodeURIComponent(u.user)}/block`, 'DELETE');
      td.append(b);
      tr.append(td);
      return tr;
    })
    : [row(['No user is blocked.', null])]));
}

/** One user control; says how it went, and redraws at once. */
async function control(done, path, method, body) {
  try {
    const r = await api(path, method, body);
    $('user-result').textContent = typeof done === 'function' ? done(r) : done;
    $('user-result').className = 'hint';
  } catch (e) {
    if (e.status === 401) return signOut(`Signed out: ${e.message}`);
    $('user-result').textContent = `Refused: ${e.message}`;
    $('user-result').className = 'error-text';
  }
  tick();
}

function row(...cells) {
  const tr = document.createElement('tr');
  for (const [text, cls] of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    if (cells.length === 1) td.colSpan = 4;
    tr.append(td);
  }
  return tr;
}

/** A line chart of the named series on a canvas, scaled to the largest. */
function draw(canvas, lines) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  const max = Math.max(1, ...lines.flatMap(([n]) => series[n]));
  const top = niceCeil(max);
  const style = getComputedStyle(document.body);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = style.getPropertyValue('--muted') || '#888';
  g.strokeStyle = style.getPropertyValue('--line') || '#ddd';
  g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + ((h - pad.t - pad.b) * i) / 4;
    g.beginPath();
    g.moveTo(pad.l, y);
    g.lineTo(w - pad.r, y);
    g.stroke();
    const v = top - (top * i) / 4;
    g.fillText(Number.isInteger(v) ? fmt(v) : v.toFixed(1), 4, y + 4);
  }
  g.fillText('5 min ago', pad.l, h - 4);
  g.fillText('now', w - pad.r - 22, h - 4);
  const x = (i) => pad.l + ((w - pad.l - pad.r) * i) / (POINTS - 1);
  const y = (v) => pad.t + (h - pad.t - pad.b) * (1 - v / top);
  for (const [name, color] of lines) {
    const s = series[name];
    if (!s.length) continue;
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    const offset = POINTS - s.length;
    s.forEach((v, i) => (i ? g.lineTo(x(offset + i), y(v)) : g.moveTo(x(offset + i), y(v))));
    g.stroke();
  }
  canvas.dataset.points = String(Math.max(...lines.map(([n]) => series[n].length)));
  canvas.dataset.max = String(max);
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

$('login-form').onsubmit = (ev) => {
  ev.preventDefault();
  $('login-error').hidden = true;
  signIn($('key').value.trim());
};
$('logout').onclick = () => signOut();
$('user-form').onsubmit = (ev) => {
  ev.preventDefault();
  const user = $('user-id').value;
  const ttl = $('block-ttl').value.trim();
  const body = ttl === '' ? undefined : { ttl: Number(ttl) };
  control(`Blocked ${user}${ttl === '' ? ' until unblocked' : ` for ${ttl} s`}`, `/api/users/${encodeURIComponent(user)}/block`, 'PUT', body);
};
$('user-disconnect').onclick = () => {
  const user = $('user-id').value;
  if (!$('user-form').reportValidity()) return;
  control((r) => `Disconnected ${user} (${r.connections} connection${r.connections === 1 ? '' : 's'})`, '/api/disconnect', 'POST', { user });
};

if (key !== null) signIn(key);
