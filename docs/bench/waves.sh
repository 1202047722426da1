#!/bin/bash
# One node (ENGINE redis|nats), WAVES fan-out runs of 2,000 subscribers in
# 2 rooms one after another (each connects, receives 3 s, disconnects);
# the node's RSS after each wave, clients gone. WRAP runs the node under a
# profiler or allocator (e.g. "heaptrack -o /tmp/ht", or "env
# LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=...");
# DUMP=1 lists the node's mappings over 1 MB of RSS after each wave.
#
#   [WRAP=...] [DUMP=1] docs/bench/waves.sh redis|nats [WAVES]
set -euo pipefail
ENGINE=$1; WAVES=${2:-5}; WRAP=${WRAP:-}
HUB=${HUB:-target/release/hubcast}
PORT=${PORT:-18900}; NATS_PORT=${NATS_PORT:-14299}
PREFIX=hubcast-bench-waves
case $ENGINE in
  redis) args=(--broker redis --redis-prefix $PREFIX) ;;
  nats)
    NATS_DIR=$(mktemp -d)
    nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR" >/dev/null 2>&1 &
    NATS_PID=$!; sleep 1
    args=(--broker nats --nats-url nats://127.0.0.1:$NATS_PORT --nats-prefix $PREFIX) ;;
esac
$WRAP "$HUB" serve --listen 127.0.0.1:$PORT "${args[@]}" --max-connections-per-ip 10000 >"${LOG:-/dev/null}" 2>&1 &
NODE=$!
pid_of_node() { pgrep -P $NODE hubcast || echo $NODE; }
cleanup() {
  # Under a wrapper that does not exec (heaptrack) the node is its child.
  kill -TERM "$(pid_of_node)" $NODE 2>/dev/null; wait $NODE 2>/dev/null || true
  [ -n "${NATS_PID:-}" ] && { kill $NATS_PID; wait $NATS_PID 2>/dev/null; rm -rf "$NATS_DIR"; }
  redis-cli --scan --pattern "$PREFIX*" | xargs -r -n 500 redis-cli del >/dev/null
}
trap cleanup EXIT
sleep 2
rss() { awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$(pid_of_node)/status; }
echo "$ENGINE start rss_mib=$(rss)"
for w in $(seq "$WAVES"); do
  "$HUB" bench fanout --url ws://127.0.0.1:$PORT/ws --subs 2000 --rooms 2 --pubs 2 --rate 10 --seconds 3 --json \
    | tail -1 | python3 -c 'import json,sys; d=json.load(sys.stdin); print("  wave lost=%s received=%s/%s" % (d["lost"], d["received"], d["expected"]))'
  sleep 3
  echo "$ENGINE after wave $w rss_mib=$(rss)"
  if [ -n "${DUMP:-}" ]; then awk '/^[0-9a-f]+-[0-9a-f]+ /{m=$0} /^Rss:/{if ($2>1000) print $2" kB  "m}' /proc/$(pid_of_node)/smaps | sort -rn | head -12; grep -c "" /proc/$(pid_of_node)/maps; ls /proc/$(pid_of_node)/task | wc -l; fi
done
