// Test helpers: a real hubcast process, a TCP proxy that can cut or
// blackhole connections, a raw WebSocket server for close codes the real
// server never sends, HS256 tokens, and waiting.
import { spawn } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../../..');

/** The hubcast binary: $HUBCAST_BIN, or the workspace's debug build. */
export function hubcastBin() {
  const bin = process.env.HUBCAST_BIN || path.join(root, 'target/debug/hubcast');
  if (!existsSync(bin)) {
    throw new Error(`no hubcast binary at ${bin}: run \`cargo build\` first or set HUBCAST_BIN`);
  }
  return bin;
}

if (typeof globalThis.WebSocket !== 'function') {
  throw new Error('this Node has no global WebSocket: run the tests with `node --experimental-websocket --test` (Node 20) or Node 22+');
}

/** Starts `hubcast serve` on 127.0.0.1 (port 0 unless given) and waits
 * for its "listening" line. */
export async function startServer({ port = 0, args = [] } = {}) {
  const child = spawn(hubcastBin(), ['serve', '--listen', `127.0.0.1:${port}`, '--log-format', 'text', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
  });
  let log = '';
  const addr = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hubcast did not start:\n${log}`)), 15000);
    child.stderr.on('data', (d) => {
      log += d;
      const m = /listening on http:\/\/([0-9.]+:\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hubcast exited with ${code}:\n${log}`));
    });
  });
  const server = {
    child,
    addr,
    port: Number(addr.split(':')[1]),
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    log: () => log,
    /** SIGTERM (graceful: every connection gets 1001) and wait for exit. */
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill(signal);
      await exited;
    },
  };
  child.removeAllListeners('exit');
  return server;
}

/** A TCP proxy in front of `target` ("host:port"). `mode`: `pass`,
 * `blackhole-down` (drop what the server sends), `blackhole` (drop both
 * ways, sockets stay open: a dead network); `refuse` closes new
 * connections at once; `cut()` drops every open one. */
export async function startProxy(target) {
  const [host, port] = target.split(':');
  const pairs = new Set();
  const proxy = { mode: 'pass', refuse: false };
  const server = net.createServer((down) => {
    if (proxy.refuse) {
      down.destroy();
      return;
    }
    const up = net.connect(Number(port), host);
    const pair = { up, down };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      up.destroy();
      down.destroy();
    };
    up.on('error', end).on('close', end);
    down.on('error', end).on('close', end);
    down.on('data', (d) => {
      if (proxy.mode !== 'blackhole') up.write(d);
    });
    up.on('data', (d) => {
      if (proxy.mode === 'pass') down.write(d);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port: p } = server.address();
  Object.assign(proxy, {
    ws: `ws://127.0.0.1:${p}/ws`,
    get open() {
      return pairs.size;
    },
    cut() {
      for (const { up, down } of pairs) {
        up.destroy();
        down.destroy();
      }
      pairs.clear();
    },
    async close() {
      proxy.cut();
      server.close();
    },
  });
  return proxy;
}

/** A minimal WebSocket server that accepts the handshake (selecting the
 * offered subprotocol), sends `welcome`, then closes with `code`. */
export async function closingServer(code, reason = '') {
  let handshakes = 0;
  const server = http.createServer((_, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket) => {
    handshakes += 1;
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: hubcast.v1\r\n\r\n`,
    );
    const text = Buffer.from(JSON.stringify({ type: 'welcome', protocol: 1, connId: `c-${handshakes}`, user: 'u', node: 'fake', heartbeat: 25 }));
    socket.write(Buffer.concat([Buffer.from([0x81, text.length]), text]));
    const body = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from(reason)]);
    socket.write(Buffer.concat([Buffer.from([0x88, body.length]), body]));
    socket.on('error', () => {});
    setTimeout(() => socket.destroy(), 200);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    ws: `ws://127.0.0.1:${server.address().port}/ws`,
    get handshakes() {
      return handshakes;
    },
    close: () => server.close(),
  };
}

/** An HS256 JWT. */
export function jwt(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/** Resolves when `cond()` is truthy (polled), or fails after `ms`. */
export async function waitFor(cond, what, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Collects a client's or room's events of one kind. */
export function collect(emitter, event) {
  const seen = [];
  emitter.on(event, (...args) => seen.push(args.length > 1 ? args : args[0]));
  return seen;
}
