// hubcast browser client (protocol v1). An ES module with no dependencies
// and no build step: `import { Hubcast } from '/client/hubcast.js'`.
//
// What it takes care of, so the app does not have to:
// - reconnecting with exponential backoff and full jitter (capped, reset
//   after a stable connection; 4005, a disconnect by the server API,
//   included); never after 1008 or 4004 (token revoked or user blocked:
//   the same credentials would be refused), nor after 4001 until a new
//   token (a token callback is asked again on every connect);
// - rejoining rooms after a reconnect with `since`/`epoch`, so missed
//   messages arrive once and in order; `unrecovered` when the server could
//   not fill the gap (the app reloads, e.g. with `history`);
// - each message delivered once (by offset within an epoch, and by msgId);
// - `publish`/`send` resolved by the server's `ack`, retried with the same
//   msgId across reconnects (the server deduplicates), with a timeout, and a
//   bounded queue of what was published while disconnected;
// - an application-level `ping`, since browsers cannot see WebSocket pings,
//   and the browser's offline/online events.
// Types: hubcast.d.ts beside this file.

const DEFAULTS = {
  token: undefined,
  name: undefined,
  protocols: ['hubcast.v1'],
  minDelay: 500,
  maxDelay: 20000,
  stableAfter: 10000,
  connectTimeout: 10000,
  pingInterval: 20000,
  pingTimeout: 10000,
  requestTimeout: 15000,
  publishTimeout: 30000,
  maxQueue: 100,
  dedupeWindow: 2000,
  gapTimeout: 3000,
  retryDelay: 1000,
  watchNetwork: true,
  autoConnect: true,
  WebSocket: undefined,
};

/** Close codes after which the client does not reconnect by itself. */
const CLOSE_POLICY = 1008;
const CLOSE_TOKEN_EXPIRED = 4001;
const CLOSE_REVOKED = 4004;
/** Error codes worth retrying a publish for (the condition passes). The
 * server's `timeout` means the outcome is unknown; the retry carries the
 * same msgId, which the server acks once. */
const RETRYABLE = new Set(['unavailable', 'rate_limited', 'timeout']);

/** An error the server sent, or one of the client's own (`timeout`,
 * `disconnected`, `closed`, `queue_full`). */
export class HubcastError extends Error {
  constructor(code, message) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'HubcastError';
    this.code = code;
    this.reason = message || '';
  }
}

class Emitter {
  #handlers = new Map();
  /** Adds a handler; returns a function that removes it. */
  on(event, fn) {
    let set = this.#handlers.get(event);
    if (!set) this.#handlers.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) {
    this.#handlers.get(event)?.delete(fn);
  }
  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }
  emit(event, ...args) {
    const set = this.#handlers.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (e) {
        // An app handler's bug must not break the connection's bookkeeping.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

/** A UUIDv7 (time-ordered), from crypto.getRandomValues, which unlike
 * crypto.randomUUID also exists outside secure contexts. */
export function uuidv7() {
  const b = new Uint8Array(16);
  globalThis.crypto.getRandomValues(b);
  let ms = Date.now();
  for (let i = 5; i >= 0; i--) {
    b[i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A bounded set of recently seen message ids. */
class Seen {
  #ids = new Set();
  #cap;
  constructor(cap) {
    this.#cap = cap;
  }
  has(id) {
    return this.#ids.has(id);
  }
  add(id) {
    this.#ids.add(id);
    if (this.#ids.size > this.#cap) {
      this.#ids.delete(this.#ids.values().next().value);
    }
  }
}

/**
 * One room this client joined. Events: `message` (envelope; each once, in
 * offset order), `presence` (event frame: each event of a busy room's
 * `batch` as its own; a `sync` frame as it is, after which the member list
 * is fetched again), `members` (the current list),
 * `unrecovered` (missed messages could not all be replayed: reload),
 * `joined` (every `joined` frame, the first and each rejoin), `left` (the
 * server took this connection out of the room), `error`.
 */
export class Room extends Emitter {
  #hc;
  #seen;
  /** Messages that arrived while a rejoin with `since` was in flight. */
  #stash = null;
  /** Messages past a gap, waiting for it to fill (offset order). */
  #held = [];
  #gapTimer = null;
  /** A member-list fetch after a presence `sync` is under way. */
  #syncing = false;
  #syncAgain = false;
  /** Member lists on their way (a join's, a presence fetch's), and the
   * changes applied since the oldest of them was asked for. A list is read
   * on the server before the reply is queued, and changes fanned out in
   * between reach us before it: each list is brought up to date with the
   * changes that arrived after it was asked for. */
  #lists = 0;
  #changes = [];
  /** Counts connections: a list asked for on an earlier one never comes. */
  #generation = 0;
  /** The member list a `join` in flight asked for. */
  #joinAsk = undefined;

  constructor(hc, name, opts) {
    super();
    this.#hc = hc;
    this.#seen = new Seen(opts.dedupeWindow);
    /** The room's name. */
    this.name = name;
    /** Offset of the last message delivered (or of the room at join). */
    this.offset = opts.since;
    /** The epoch `offset` belongs to. */
    this.epoch = opts.epoch;
    /** True between a `joined` and a disconnect or `leave`. */
    this.joined = false;
    /** Present users, by user id: `{user, name, status, connections}`. */
    this.members = new Map();
    /** Users present in all (the server may list only the first ones). */
    this.total = 0;
    this.left = false;
  }

  /** Publishes to this room; resolves with the `ack`. Options: `msgId`,
   * `echo` (also deliver to this connection), `timeout` (ms). */
  publish(event, data, opts = {}) {
    return this.#hc.publish(this.name, event, data, opts);
  }

  /** The room's history: `{epoch, messages, complete}`. */
  history(opts = {}) {
    return this.#hc.history(this.name, opts);
  }

  /** The room's presence, fresh from the server: the members list. */
  async presence() {
    const ask = this.#asked();
    let reply;
    try {
      reply = await this.#hc._request({ type: 'presence', room: this.name });
    } catch (err) {
      this.#answered(ask);
      throw err;
    }
    if (ask.generation === this.#generation) this.#setMembers(reply.members, reply.total, ask.mark);
    this.#answered(ask);
    return [...this.members.values()];
  }

  /** A member list was asked for: where its catch-up starts. */
  #asked() {
    this.#lists += 1;
    return { mark: this.#changes.length, generation: this.#generation };
  }

  /** A member list came (or never will). */
  #answered(ask) {
    if (ask.generation !== this.#generation) return;
    this.#lists -= 1;
    if (this.#lists === 0) this.#changes = [];
  }

  /** Leaves the room; messages stop. */
  leave() {
    return this.#hc._leave(this);
  }

  /** The `join` frame for a (re)join. */
  _joinFrame() {
    this.#joinAsk = this.#asked();
    const f = { type: 'join', room: this.name };
    if (this.offset !== undefined) {
      f.since = this.offset;
      if (this.epoch !== undefined) f.epoch = this.epoch;
      this.#stash = [];
    }
    return f;
  }

  _onJoined(frame) {
    const since = this.offset;
    const stash = this.#stash;
    this.#stash = null;
    this.joined = true;
    const ask = this.#joinAsk;
    this.#joinAsk = undefined;
    this.#setMembers(frame.members || [], frame.total, ask?.mark);
    if (ask !== undefined) this.#answered(ask);
    if (frame.recovered === false) {
      const info = { since, epoch: frame.epoch, offset: frame.offset, previousEpoch: this.epoch };
      this.epoch = frame.epoch;
      this.offset = frame.offset;
      this.#held = [];
      this.emit('joined', frame);
      this.emit('unrecovered', info);
      this.#hc.emit('unrecovered', this, info);
      for (const env of stash || []) this._accept(env);
      return;
    }
    if (since === undefined) {
      // A first join: the room's position now. (A personal room is
      // subscribed from the start, so messages may have come before.)
      this.epoch = frame.epoch;
      this.offset = Math.max(this.offset ?? 0, frame.offset);
    }
    this.emit('joined', frame);
    for (const env of stash || []) this._accept(env);
  }

  _onPresence(frame) {
    if (frame.action === 'batch') {
      // A busy room's events, sent together (extension): each is applied
      // and emitted as a 1.1 event, and `members` once for all of them.
      for (const e of frame.events ?? []) this.#apply({ type: 'presence', room: frame.room, ...e });
      this.emit('members', [...this.members.values()]);
      return;
    }
    if (frame.action === 'sync') {
      // Too many changes to list (extension): the list is fetched again.
      this.emit('presence', frame);
      this.#resync();
      return;
    }
    this.#apply(frame);
    this.emit('members', [...this.members.values()]);
  }

  /** One fetch of the member list at a time; a `sync` during it makes
   * one more after it. */
  #resync() {
    if (this.#syncing) {
      this.#syncAgain = true;
      return;
    }
    this.#syncing = true;
    this.presence()
      .then((list) => this.emit('members', list))
      .catch(() => {})
      .finally(() => {
        this.#syncing = false;
        if (this.#syncAgain && this.joined) {
          this.#syncAgain = false;
          this.#resync();
        }
      });
  }

  #apply(frame) {
    if (this.#lists > 0) this.#changes.push(frame);
    this.#change(frame);
    this.emit('presence', frame);
  }

  #change(frame) {
    if (frame.action === 'leave') {
      if (this.members.delete(frame.user)) this.total = Math.max(0, this.total - 1);
    } else {
      const had = this.members.get(frame.user);
      if (!had) this.total += 1;
      this.members.set(frame.user, {
        user: frame.user,
        name: frame.name ?? had?.name ?? frame.user,
        status: frame.status ?? had?.status ?? 'online',
        connections: had?.connections ?? 1,
      });
    }
  }

  /** A member list from the server; `mark` (where its catch-up starts)
   * when this client asked for it. */
  #setMembers(list, total, mark) {
    this.members = new Map(list.map((m) => [m.user, m]));
    this.total = total ?? list.length;
    if (mark !== undefined) for (const c of this.#changes.slice(mark)) this.#change(c);
    this.emit('members', [...this.members.values()]);
  }

  /** An envelope for this room, from the wire. */
  _accept(env) {
    if (this.left) return;
    if (this.#stash) {
      this.#stash.push(env);
      return;
    }
    if (this.#seen.has(env.msgId)) return;
    if (this.epoch !== undefined && env.epoch !== this.epoch) {
      // The room's history was lost (a new epoch): what came between is
      // gone; start over from this message.
      const info = { since: this.offset, epoch: env.epoch, offset: env.offset - 1, previousEpoch: this.epoch };
      this.epoch = env.epoch;
      this.offset = env.offset - 1;
      this.#held = [];
      this.emit('unrecovered', info);
      this.#hc.emit('unrecovered', this, info);
    }
    if (this.offset === undefined) {
      this.epoch = env.epoch;
      this.offset = env.offset - 1;
    }
    if (env.offset <= this.offset) return;
    if (env.offset === this.offset + 1) {
      this.#deliver(env);
      this.#drain();
      return;
    }
    // A gap: hold this one until the missing ones arrive (a rejoin's replay
    // can follow live messages in a personal room), or give up waiting.
    if (!this.#held.some((h) => h.offset === env.offset)) {
      this.#held.push(env);
      this.#held.sort((a, b) => a.offset - b.offset);
    }
    if (!this.#gapTimer) {
      this.#gapTimer = setTimeout(() => {
        this.#gapTimer = null;
        const held = this.#held;
        this.#held = [];
        for (const h of held) if (h.offset > this.offset) this.#deliver(h);
      }, this.#hc.options.gapTimeout);
    }
  }

  #drain() {
    while (this.#held.length && this.#held[0].offset <= this.offset + 1) {
      const h = this.#held.shift();
      if (h.offset === this.offset + 1) this.#deliver(h);
    }
    if (!this.#held.length && this.#gapTimer) {
      clearTimeout(this.#gapTimer);
      this.#gapTimer = null;
    }
  }

  #deliver(env) {
    this.offset = env.offset;
    this.#seen.add(env.msgId);
    this.emit('message', env);
    this.#hc.emit('message', env);
    if (this.name.startsWith('@')) this.#hc.emit('direct', env);
  }

  _disconnected() {
    this.joined = false;
    this.#stash = null;
    // Lists asked for on the lost connection never come.
    this.#generation += 1;
    this.#lists = 0;
    this.#changes = [];
    this.#joinAsk = undefined;
  }

  _dispose() {
    this.left = true;
    this.joined = false;
    this.#held = [];
    if (this.#gapTimer) clearTimeout(this.#gapTimer);
    this.#gapTimer = null;
  }
}

/**
 * A connection to hubcast that survives disconnects. Events: `state`
 * (`connecting`, `connected`, `reconnecting`, `closed`; with
 * `{code, reason, delay, attempt}`), `welcome`, `message` (every room),
 * `direct` (messages to this user's personal room), `unrecovered`
 * (room, info), `room` (a room the server joined this connection to),
 * `left` (a room it took it out of), `error` (server errors not tied to a
 * request).
 */
export class Hubcast extends Emitter {
  #ws = null;
  #nextId = 1;
  /** Requests waiting for their reply, by frame id. */
  #requests = new Map();
  /** Publishes and sends not acked yet, oldest first. */
  #outbox = new Set();
  #rooms = new Map();
  /** Rooms whose `join` reply is awaited, by frame id. */
  #joining = new Map();
  #attempt = 0;
  #timers = { reconnect: null, ping: null, pingDeadline: null, stable: null, connect: null };
  #lastFrame = 0;
  #wanted = 'online';
  #stopped = false;
  #tokenExpired = false;
  #listeners = null;

  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = this.options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new Error('no WebSocket implementation: pass options.WebSocket');
    /** `connecting`, `connected`, `reconnecting` or `closed`. */
    this.state = 'closed';
    /** From `welcome`: this connection's id, user id, display name, node. */
    this.connId = undefined;
    this.user = undefined;
    this.name = undefined;
    this.node = undefined;
    this.#watchNetwork();
    // After the caller's synchronous `on(...)` calls, so they see
    // `connecting` too.
    if (this.options.autoConnect) queueMicrotask(() => this.state === 'closed' && !this.#stopped && this.connect());
  }

  /** Rooms joined (or being joined), by name; personal room excluded. */
  get rooms() {
    return new Map([...this.#rooms].filter(([n]) => !n.startsWith('@')));
  }

  /** This user's personal room (direct messages), once connected. */
  get personal() {
    return this.user === undefined ? undefined : this.#rooms.get(`@${this.user}`);
  }

  /** The status this client asked for (`online`, `away`, `busy`). */
  get status() {
    return this.#wanted;
  }

  /** Publishes and sends waiting for their ack (sent or queued). */
  get pending() {
    return this.#outbox.size;
  }

  /** Opens the connection (again, after `close()`, a 1008 or a 4001). */
  connect() {
    this.#stopped = false;
    this.#tokenExpired = false;
    if (this.#ws) return;
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = null;
    this.#open();
  }

  /** A new token (string or callback); reconnects if the old one expired. */
  setToken(token) {
    this.options.token = token;
    if (this.#tokenExpired && !this.#stopped) this.connect();
  }

  /** Closes for good: no reconnect; pending publishes are rejected. */
  close() {
    this.#stopped = true;
    this.#clearTimers();
    const ws = this.#ws;
    this.#detach();
    if (ws) {
      try {
        ws.close(1000, 'client closed');
      } catch {
        // already closed
      }
    }
    this.#failAll(new HubcastError('closed', 'client closed'), true);
    for (const room of this.#rooms.values()) room._dispose();
    this.#rooms.clear();
    this.#unwatchNetwork();
    this.#setState('closed', { code: 1000, reason: 'client closed' });
  }

  /** Joins a room; resolves with the Room on `joined`. Options: `since`
   * and `epoch` (resume from a stored position). Joining a room already
   * joined resolves with the same Room. */
  join(name, opts = {}) {
    const existing = this.#rooms.get(name);
    if (existing && !existing.left) {
      if (existing.joined) return Promise.resolve(existing);
      if (!existing._ready) Hubcast.#pend(existing);
      return existing._ready;
    }
    const room = new Room(this, name, { ...opts, dedupeWindow: this.options.dedupeWindow });
    this.#rooms.set(name, room);
    Hubcast.#pend(room);
    if (this.state === 'connected') this.#sendJoin(room);
    return room._ready;
  }

  static #pend(room) {
    room._ready = new Promise((resolve, reject) => {
      room._resolve = resolve;
      room._reject = reject;
    });
    // A rejection nobody awaits must not become an unhandled one.
    room._ready.catch(() => {});
  }

  /** Sends a direct message to `user` (its personal room); resolves with
   * the `ack`. Options as for publish (no `echo`). */
  send(user, event, data, opts = {}) {
    return this.#enqueue({ type: 'send', to: user, event, data }, opts);
  }

  /** Publishes to `room` (no need to have joined it). */
  publish(room, event, data, opts = {}) {
    const frame = { type: 'publish', room, event, data };
    if (opts.echo) frame.echo = true;
    return this.#enqueue(frame, opts);
  }

  /** A room's history: `{room, epoch, messages, complete}`. */
  history(room, opts = {}) {
    const f = { type: 'history', room };
    if (opts.since !== undefined) f.since = opts.since;
    if (opts.limit !== undefined) f.limit = opts.limit;
    return this._request(f);
  }

  /** A room's presence: the `members` list. */
  async presence(room) {
    return (await this._request({ type: 'presence', room })).members;
  }

  /** Sets this user's status (`online`, `away`, `busy`); kept across
   * reconnects. */
  async setStatus(status) {
    this.#wanted = status;
    if (this.state !== 'connected') return;
    await this._request({ type: 'status', status });
  }

  /** Calls `method` of the application's backend through the server
   * (`rpc`); resolves with the backend's `data`. The backend's own error,
   * or `unavailable` when the server could not ask it, rejects with a
   * HubcastError of that code and message. */
  async rpc(method, data = null, opts = {}) {
    const f = await this._request({ type: 'rpc', method, data }, opts.timeout);
    if (f.error) throw new HubcastError(f.error.code, f.error.message);
    return f.data;
  }

  /** Round trip time of an application-level ping, in ms. */
  async ping() {
    const t = Date.now();
    await this._request({ type: 'ping' });
    return Date.now() - t;
  }

  // ---- requests -------------------------------------------------------

  _request(frame, timeout = this.options.requestTimeout) {
    return new Promise((resolve, reject) => {
      if (this.state !== 'connected') {
        reject(new HubcastError('disconnected', 'not connected'));
        return;
      }
      const id = this.#nextId++;
      const timer = setTimeout(() => {
        this.#requests.delete(id);
        reject(new HubcastError('timeout', `no reply to ${frame.type} within ${timeout} ms`));
      }, timeout);
      this.#requests.set(id, { resolve, reject, timer });
      this.#write({ ...frame, id });
    });
  }

  async _leave(room) {
    if (this.#rooms.get(room.name) !== room) return;
    this.#rooms.delete(room.name);
    room._dispose();
    room._reject?.(new HubcastError('left', 'left before joined'));
    if (this.state === 'connected') {
      try {
        await this._request({ type: 'leave', room: room.name });
      } catch (e) {
        // Disconnected meanwhile: the room is not rejoined, which is a leave.
        if (e.code !== 'disconnected') throw e;
      }
    }
  }

  #enqueue(frame, opts) {
    return new Promise((resolve, reject) => {
      if (this.#stopped && this.state === 'closed') {
        reject(new HubcastError('closed', 'client closed'));
        return;
      }
      if (this.state !== 'connected' && this.#outbox.size >= this.options.maxQueue) {
        reject(new HubcastError('queue_full', `${this.options.maxQueue} publishes already wait for a connection`));
        return;
      }
      frame.msgId = opts.msgId || uuidv7();
      const timeout = opts.timeout ?? this.options.publishTimeout;
      const entry = { frame, resolve, reject, id: null, retry: null };
      entry.timer = setTimeout(() => {
        this.#settle(entry);
        reject(new HubcastError('timeout', `no ack for ${frame.msgId} within ${timeout} ms; retrying with the same msgId is safe`));
      }, timeout);
      this.#outbox.add(entry);
      if (this.state === 'connected') this.#transmit(entry);
    });
  }

  #transmit(entry) {
    entry.id = this.#nextId++;
    this.#requests.set(entry.id, { outbox: entry });
    this.#write({ ...entry.frame, id: entry.id });
  }

  #settle(entry) {
    clearTimeout(entry.timer);
    clearTimeout(entry.retry);
    this.#outbox.delete(entry);
    if (entry.id !== null) this.#requests.delete(entry.id);
  }

  #failAll(err, outboxToo) {
    // Every reply awaited on this connection is gone; publishes are not
    // failed by that (they are sent again), other requests are.
    for (const [id, r] of this.#requests) {
      this.#requests.delete(id);
      if (r.outbox) {
        r.outbox.id = null;
        continue;
      }
      clearTimeout(r.timer);
      r.reject(err);
    }
    for (const room of this.#joining.values()) room._disconnected();
    this.#joining.clear();
    if (outboxToo) {
      for (const entry of [...this.#outbox]) {
        this.#settle(entry);
        entry.reject(err);
      }
      for (const room of this.#rooms.values()) room._reject?.(err);
    }
  }

  // ---- connection -----------------------------------------------------

  async #open() {
    this.#setState(this.#attempt === 0 && this.state !== 'reconnecting' ? 'connecting' : 'reconnecting', {
      attempt: this.#attempt,
    });
    let token = this.options.token;
    if (typeof token === 'function') {
      try {
        token = await token();
      } catch (e) {
        this.#scheduleReconnect({ code: 0, reason: `token callback failed: ${e?.message ?? e}` });
        return;
      }
      if (this.#stopped || this.#ws) return;
    }
    const url = new URL(this.url, globalThis.location?.href);
    if (token) url.searchParams.set('token', token);
    if (this.options.name && !token) url.searchParams.set('name', this.options.name);
    let ws;
    try {
      ws = new this.WebSocket(url.toString(), this.options.protocols);
    } catch (e) {
      this.#scheduleReconnect({ code: 0, reason: String(e?.message ?? e) });
      return;
    }
    this.#ws = ws;
    ws.onmessage = (ev) => this.#ws === ws && this.#onFrame(ev.data);
    ws.onclose = (ev) => this.#ws === ws && this.#onClose(ev.code, ev.reason);
    ws.onerror = () => {};
    // A handshake that hangs (a blackholed network; some WebSocket
    // implementations never report a connection reset before the upgrade)
    // counts as a failed attempt.
    clearTimeout(this.#timers.connect);
    this.#timers.connect = setTimeout(() => {
      if (this.#ws === ws && this.state !== 'connected') this.#drop('connect timeout');
    }, this.options.connectTimeout);
  }

  #write(frame) {
    try {
      this.#ws?.send(JSON.stringify(frame));
    } catch {
      // The close event follows; what was in flight is sent again then.
    }
  }

  #onFrame(raw) {
    this.#lastFrame = Date.now();
    let f;
    try {
      f = JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
    } catch {
      return;
    }
    switch (f.type) {
      case 'welcome':
        return this.#onWelcome(f);
      case 'message':
        return this.#rooms.get(f.room)?._accept(f);
      case 'joined':
        return this.#onJoined(f);
      case 'left':
        if (f.id === undefined) return this.#onUnsubscribed(f);
        break;
      case 'presence':
        if (f.id === undefined) return this.#rooms.get(f.room)?._onPresence(f);
        break;
      case 'error':
        if (f.id === undefined) {
          const err = new HubcastError(f.code, f.message);
          // A refused room of the token's `subs` is named.
          if (f.room !== undefined) err.room = f.room;
          this.emit('error', err);
          return;
        }
        break;
    }
    if (f.id !== undefined) this.#onReply(f);
  }

  #onWelcome(f) {
    const userChanged = this.user !== undefined && this.user !== f.user;
    this.connId = f.connId;
    this.user = f.user;
    this.name = f.name ?? f.user;
    this.node = f.node;
    this.heartbeat = f.heartbeat;
    if (userChanged) {
      for (const [n, r] of this.#rooms) {
        if (n.startsWith('@')) {
          r._dispose();
          this.#rooms.delete(n);
        }
      }
    }
    clearTimeout(this.#timers.connect);
    this.#setState('connected', { connId: f.connId, user: f.user });
    this.emit('welcome', f);
    // Direct messages: the personal room is subscribed automatically;
    // joining it tells its position, and after a reconnect fills the gap.
    const personal = `@${f.user}`;
    if (!this.#rooms.has(personal)) {
      this.#rooms.set(personal, new Room(this, personal, { dedupeWindow: this.options.dedupeWindow }));
    }
    for (const room of this.#rooms.values()) this.#sendJoin(room);
    if (this.#wanted !== 'online') {
      this._request({ type: 'status', status: this.#wanted }).catch(() => {});
    }
    for (const entry of this.#outbox) if (entry.id === null && !entry.retry) this.#transmit(entry);
    this.#startPing();
    clearTimeout(this.#timers.stable);
    this.#timers.stable = setTimeout(() => {
      this.#attempt = 0;
    }, this.options.stableAfter);
  }

  #sendJoin(room) {
    const id = this.#nextId++;
    this.#joining.set(id, room);
    this.#write({ ...room._joinFrame(), id });
  }

  #onJoined(f) {
    if (f.id === undefined) return this.#onSubscribed(f);
    const room = this.#joining.get(f.id);
    if (!room) return;
    this.#joining.delete(f.id);
    if (room.left) return;
    room._onJoined(f);
    room._resolve?.(room);
  }

  /** A `joined` without `id`: the server joined this connection to a room
   * by itself (the token's `subs`). A new room appears in `rooms` as if
   * `join()` had been called (and is rejoined with recovery after a
   * reconnect); the client's `room` event hands it over. A room already
   * tracked is being rejoined by our own `join` (with `since` after a
   * reconnect), whose reply says what was recovered: this one is ignored. */
  #onSubscribed(f) {
    const known = this.#rooms.get(f.room);
    if (known && !known.left) return;
    const room = new Room(this, f.room, { dedupeWindow: this.options.dedupeWindow });
    this.#rooms.set(f.room, room);
    room._onJoined(f);
    room._ready = Promise.resolve(room);
    this.emit('room', room);
  }

  /** A `left` without `id`: the server took this connection out of a room
   * by itself (`POST /api/unsubscribe`). The room leaves `rooms` (so it is
   * not rejoined after a reconnect), becomes `left`, and emits `left`; the
   * client emits `left` with it. A room with a `join` of ours in flight
   * stays: the server handles that join after this leave, and its reply
   * follows. */
  #onUnsubscribed(f) {
    const room = this.#rooms.get(f.room);
    if (!room || room.left) return;
    for (const r of this.#joining.values()) if (r === room) return;
    this.#rooms.delete(f.room);
    room._dispose();
    room.emit('left');
    this.emit('left', room);
  }

  #onReply(f) {
    const joining = this.#joining.get(f.id);
    if (joining && f.type === 'error') {
      this.#joining.delete(f.id);
      joining._disconnected();
      if (this.#rooms.get(joining.name) === joining) this.#rooms.delete(joining.name);
      joining._dispose();
      const err = new HubcastError(f.code, f.message);
      joining.emit('error', err);
      joining._reject?.(err);
      return;
    }
    const req = this.#requests.get(f.id);
    if (!req) return;
    this.#requests.delete(f.id);
    if (req.outbox) {
      const entry = req.outbox;
      entry.id = null;
      if (f.type === 'error') {
        if (RETRYABLE.has(f.code)) {
          // Passing conditions (broker down or slow, rate limit): try
          // again soon, with the same msgId.
          const delay = this.options.retryDelay * (0.5 + Math.random());
          entry.retry = setTimeout(() => {
            entry.retry = null;
            if (this.state === 'connected' && this.#outbox.has(entry)) this.#transmit(entry);
          }, delay);
          return;
        }
        this.#settle(entry);
        entry.reject(new HubcastError(f.code, f.message));
        return;
      }
      this.#settle(entry);
      entry.resolve(f);
      return;
    }
    clearTimeout(req.timer);
    if (f.type === 'error') req.reject(new HubcastError(f.code, f.message));
    else req.resolve(f);
  }

  #onClose(code, reason) {
    this.#detach();
    if (this.#stopped) return;
    const info = { code, reason };
    this.#failAll(new HubcastError('disconnected', `connection closed (${code}${reason ? `: ${reason}` : ''})`), false);
    if (code === CLOSE_POLICY || code === CLOSE_REVOKED) {
      this.#stopped = true;
      const why = code === CLOSE_REVOKED ? 'revoked' : 'refused by policy';
      this.#failAll(new HubcastError('closed', `${why}: ${reason}`), true);
      this.#setState('closed', info);
      return;
    }
    if (code === CLOSE_TOKEN_EXPIRED) {
      if (typeof this.options.token === 'function') {
        // A fresh token now, not after a backoff.
        this.#attempt = 0;
        this.#setState('reconnecting', { ...info, delay: 0, attempt: 0 });
        this.#open();
        return;
      }
      this.#tokenExpired = true;
      this.#setState('closed', info);
      return;
    }
    this.#scheduleReconnect(info);
  }

  /** Forgets the socket (its late events are ignored) and its timers. */
  #detach() {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      ws.onmessage = null;
      ws.onclose = null;
    }
    clearInterval(this.#timers.ping);
    clearTimeout(this.#timers.pingDeadline);
    clearTimeout(this.#timers.stable);
    clearTimeout(this.#timers.connect);
    this.#timers.ping = this.#timers.pingDeadline = this.#timers.stable = this.#timers.connect = null;
    for (const room of this.#rooms.values()) room._disconnected();
  }

  /** Drops a connection that is dead (no pong, browser offline) without
   * waiting for a close handshake that will not come. */
  #drop(reason) {
    const ws = this.#ws;
    if (!ws) return;
    this.#onClose(1006, reason);
    try {
      ws.close(4100, reason);
    } catch {
      // already closing
    }
  }

  #scheduleReconnect(info) {
    if (this.#stopped) return;
    if (this.#offline()) {
      // Wait for the browser's `online` event.
      this.#setState('reconnecting', { ...info, delay: null, attempt: this.#attempt, offline: true });
      return;
    }
    const cap = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this.#attempt);
    const delay = Math.round(Math.random() * cap);
    this.#attempt += 1;
    this.#setState('reconnecting', { ...info, delay, attempt: this.#attempt });
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = setTimeout(() => {
      this.#timers.reconnect = null;
      if (!this.#stopped && !this.#ws) this.#open();
    }, delay);
  }

  #startPing() {
    const every = Math.min(this.options.pingInterval, (this.heartbeat || 25) * 1000);
    this.#timers.ping = setInterval(() => {
      if (this.state !== 'connected') return;
      const sent = Date.now();
      const id = this.#nextId++;
      this.#write({ type: 'ping', id });
      // The oldest unanswered ping's deadline stands.
      if (this.#timers.pingDeadline) return;
      this.#timers.pingDeadline = setTimeout(() => {
        this.#timers.pingDeadline = null;
        if (this.#lastFrame < sent) this.#drop('no reply to ping');
      }, this.options.pingTimeout);
    }, every);
  }

  #clearTimers() {
    for (const k of Object.keys(this.#timers)) {
      clearTimeout(this.#timers[k]);
      clearInterval(this.#timers[k]);
      this.#timers[k] = null;
    }
  }

  #setState(state, info = {}) {
    const changed = state !== this.state;
    this.state = state;
    if (changed || state === 'reconnecting') this.emit('state', state, info);
  }

  #offline() {
    return this.options.watchNetwork && globalThis.navigator?.onLine === false;
  }

  #watchNetwork() {
    const w = globalThis.window;
    if (!this.options.watchNetwork || !w?.addEventListener) return;
    this.#listeners = {
      // Browsers keep a WebSocket "open" for a long time after the network
      // went away; the offline event says so at once.
      offline: () => this.#drop('browser offline'),
      online: () => {
        if (this.#stopped || this.#ws || this.#tokenExpired) return;
        clearTimeout(this.#timers.reconnect);
        this.#timers.reconnect = null;
        this.#open();
      },
    };
    w.addEventListener('offline', this.#listeners.offline);
    w.addEventListener('online', this.#listeners.online);
  }

  #unwatchNetwork() {
    const w = globalThis.window;
    if (!this.#listeners || !w) return;
    w.removeEventListener('offline', this.#listeners.offline);
    w.removeEventListener('online', this.#listeners.online);
    this.#listeners = null;
  }
}

export default Hubcast;
