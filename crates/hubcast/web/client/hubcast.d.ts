// Type declarations for hubcast.js (protocol v1).

export type State = 'connecting' | 'connected' | 'reconnecting' | 'closed';
export type Status = 'online' | 'away' | 'busy';

export interface StateInfo {
  /** Close code of the connection that ended (1006 when the client dropped
   * a dead one: no pong, browser offline). `closed` with 4004: the token was
   * revoked or the user blocked, and the client does not reconnect; 4005
   * (disconnected by the server API) is reconnected. */
  code?: number;
  reason?: string;
  /** Milliseconds until the next attempt (null: waiting for `online`). */
  delay?: number | null;
  attempt?: number;
  offline?: boolean;
  connId?: string;
  user?: string;
}

export interface Envelope<T = unknown> {
  type: 'message';
  room: string;
  offset: number;
  epoch: string;
  msgId: string;
  /** Server receive time, Unix ms. */
  timestamp: number;
  eventType: string;
  /** The publisher's user id (or the API caller's `source`). */
  source: string;
  data: T;
  traceId?: string;
}

export interface Member {
  user: string;
  name: string;
  status: Status;
  connections: number;
}

export interface PresenceEvent {
  type: 'presence';
  room: string;
  action: 'join' | 'leave' | 'status';
  user: string;
  name: string;
  status: Status;
}

/** A busy room's changes were too many to list (protocol extension): the
 * room fetches its member list again (a `members` event follows). */
export interface PresenceSync {
  type: 'presence';
  room: string;
  action: 'sync';
  /** How many changes there were. */
  changes: number;
}

export interface Ack {
  type: 'ack';
  msgId: string;
  room: string;
  offset: number;
  epoch: string;
  /** True when this msgId had been published already (not delivered again). */
  duplicate: boolean;
}

export interface HistoryPage {
  room: string;
  epoch: string;
  messages: Envelope[];
  complete: boolean;
}

export interface JoinedFrame {
  type: 'joined';
  room: string;
  offset: number;
  epoch: string;
  recovered?: boolean;
  members: Member[];
  total?: number;
}

export interface UnrecoveredInfo {
  /** Offset the client resumed from. */
  since?: number;
  /** The room's epoch and latest offset now. */
  epoch: string;
  offset: number;
  previousEpoch?: string;
}

export interface Welcome {
  type: 'welcome';
  protocol: number;
  connId: string;
  user: string;
  name?: string;
  node: string;
  heartbeat: number;
  maxMessageBytes?: number;
}

export interface Options {
  /** A JWT, or a function returning one (asked again on every connect). */
  token?: string | (() => string | Promise<string>);
  /** Display name of an anonymous connection. */
  name?: string;
  protocols?: string[];
  /** Backoff: the first cap and the largest (ms); full jitter below it. */
  minDelay?: number;
  maxDelay?: number;
  /** A connection up this long resets the backoff (ms). */
  stableAfter?: number;
  /** A handshake not answered by `welcome` within this is given up (ms). */
  connectTimeout?: number;
  /** Application-level ping period and the wait for any reply (ms). */
  pingInterval?: number;
  pingTimeout?: number;
  /** Timeout of presence/history/status/ping/leave requests (ms). */
  requestTimeout?: number;
  /** Default timeout of publish/send (ms). */
  publishTimeout?: number;
  /** Publishes that may wait while disconnected. */
  maxQueue?: number;
  /** Message ids remembered per room for deduplication. */
  dedupeWindow?: number;
  /** How long an out-of-order message waits for the gap before it (ms). */
  gapTimeout?: number;
  /** Base delay before retrying an `unavailable`/`timeout`/`rate_limited` publish. */
  retryDelay?: number;
  /** Follow the browser's offline/online events (default true). */
  watchNetwork?: boolean;
  /** Connect in the constructor (default true). */
  autoConnect?: boolean;
  /** A WebSocket class (default: globalThis.WebSocket). */
  WebSocket?: unknown;
}

export interface PublishOptions {
  /** Your own id; retries with it are not delivered twice. */
  msgId?: string;
  /** Deliver to this connection too (default false). */
  echo?: boolean;
  /** ms before the promise rejects with `timeout`. */
  timeout?: number;
}

export type Unsubscribe = () => void;

export class HubcastError extends Error {
  /** A protocol error code, or `timeout`, `disconnected`, `closed`,
   * `queue_full`, `left`. */
  code: string;
  reason: string;
  /** On the error of a refused room of the token's `subs`: that room. */
  room?: string;
}

declare class Emitter<E extends { [K in keyof E]: (...args: any[]) => void }> {
  on<K extends keyof E>(event: K, fn: E[K]): Unsubscribe;
  once<K extends keyof E>(event: K, fn: E[K]): Unsubscribe;
  off<K extends keyof E>(event: K, fn: E[K]): void;
}

export interface RoomEvents {
  message: (envelope: Envelope) => void;
  presence: (event: PresenceEvent | PresenceSync) => void;
  members: (members: Member[]) => void;
  joined: (frame: JoinedFrame) => void;
  /** The server took this connection out of the room (`POST
   * /api/unsubscribe`): the room is `left` and no longer in `rooms`. */
  left: () => void;
  unrecovered: (info: UnrecoveredInfo) => void;
  error: (error: HubcastError) => void;
}

export class Room extends Emitter<RoomEvents> {
  readonly name: string;
  /** Offset of the last message delivered. */
  offset: number | undefined;
  epoch: string | undefined;
  joined: boolean;
  left: boolean;
  members: Map<string, Member>;
  total: number;
  publish<T = unknown>(event: string, data: T, opts?: PublishOptions): Promise<Ack>;
  history(opts?: { since?: number; limit?: number }): Promise<HistoryPage>;
  presence(): Promise<Member[]>;
  leave(): Promise<void>;
}

export interface HubcastEvents {
  state: (state: State, info: StateInfo) => void;
  welcome: (frame: Welcome) => void;
  message: (envelope: Envelope) => void;
  direct: (envelope: Envelope) => void;
  unrecovered: (room: Room, info: UnrecoveredInfo) => void;
  /** A room the server joined this connection to by itself (the token's
   * `subs`): it is in `rooms` from now on, as if `join()` had been called. */
  room: (room: Room) => void;
  /** A room the server took this connection out of by itself (`POST
   * /api/unsubscribe`): gone from `rooms`, not rejoined after a reconnect. */
  left: (room: Room) => void;
  error: (error: HubcastError) => void;
}

export class Hubcast extends Emitter<HubcastEvents> {
  constructor(url: string, options?: Options);
  readonly url: string;
  readonly options: Required<Options>;
  state: State;
  connId?: string;
  user?: string;
  name?: string;
  node?: string;
  readonly rooms: Map<string, Room>;
  readonly personal: Room | undefined;
  readonly status: Status;
  readonly pending: number;
  connect(): void;
  setToken(token: Options['token']): void;
  close(): void;
  join(room: string, opts?: { since?: number; epoch?: string }): Promise<Room>;
  publish<T = unknown>(room: string, event: string, data: T, opts?: PublishOptions): Promise<Ack>;
  send<T = unknown>(user: string, event: string, data: T, opts?: Omit<PublishOptions, 'echo'>): Promise<Ack>;
  history(room: string, opts?: { since?: number; limit?: number }): Promise<HistoryPage>;
  presence(room: string): Promise<Member[]>;
  setStatus(status: Status): Promise<void>;
  /** Calls the backend's `method` (`rpc`); rejects with a HubcastError
   * carrying the backend's error code, or `unavailable`. */
  rpc<R = unknown, T = unknown>(method: string, data?: T, opts?: { timeout?: number }): Promise<R>;
  ping(): Promise<number>;
}

export function uuidv7(): string;
export default Hubcast;
