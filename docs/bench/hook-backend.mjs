// A fast local backend for the publish-hook benchmark (docs/benchmarks.md,
// "Publish hook"): checks Hubcast-Signature on every request, as a real
// receiver would (docs/hooks.md's check), and allows. Prints its port.
//   node docs/bench/hook-backend.mjs SECRET
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';

const secret = process.argv[2];
function verify(header, raw) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? '');
  if (!m || Math.abs(Date.now() / 1000 - Number(m[1])) > 300) return false;
  const want = createHmac('sha256', secret).update(`${m[1]}.`).update(raw).digest();
  return timingSafeEqual(want, Buffer.from(m[2], 'hex'));
}
const allow = JSON.stringify({ allow: true });
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (!verify(req.headers['hubcast-signature'], Buffer.concat(chunks))) {
      res.writeHead(401).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(allow);
  });
});
server.keepAliveTimeout = 120_000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
