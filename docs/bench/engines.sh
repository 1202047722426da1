#!/bin/bash
# One node on each engine: memory, Redis, NATS JetStream (file-backed stream,
# the default) and NATS with nats_storage = memory; the same fan-out against
# each, interleaved, ROUNDS times, every node started by `hubcast bench
# --spawn 1`. Redis is the machine's (127.0.0.1:6379); NATS is a nats-server
# of this script's own (JetStream, store in a temporary directory, removed
# at the end). `--broker-pid` adds that server's CPU (the `redis_cpu_*`
# figures, whichever engine).
#
#   [ENGINES="memory redis nats nats-mem"] docs/bench/engines.sh [ROUNDS] [NAME:subs:rooms:pubs:rate:seconds:size ...]
set -euo pipefail
ROUNDS=${1:-3}; shift || true
SCEN=("$@")
[ ${#SCEN[@]} -gt 0 ] || SCEN=(heavy:5000:50:4:2000:6:100 saturate:2000:10:8:0:6:100)
HUB=${HUB:-target/release/hubcast}
ENGINES=${ENGINES:-memory redis nats nats-mem}
NATS_PORT=${NATS_PORT:-14222}
REDIS_PID=$(redis-cli info server | tr -d '\r' | awk -F: '/^process_id:/{print $2}')
PREFIX=hubcast-bench-engines
NATS_DIR=$(mktemp -d)
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_DIR" >/dev/null 2>&1 &
NATS_PID=$!
trap 'kill $NATS_PID; wait $NATS_PID 2>/dev/null; rm -rf "$NATS_DIR";
      redis-cli --scan --pattern "$PREFIX*" | xargs -r -n 500 redis-cli del >/dev/null' EXIT
sleep 1
NATS="--broker nats --nats-url nats://127.0.0.1:$NATS_PORT"
for r in $(seq "$ROUNDS"); do
  for s in "${SCEN[@]}"; do
    IFS=: read -r name subs rooms pubs rate secs size <<<"$s"
    for engine in $ENGINES; do
      case $engine in
        memory)   args=""; pid="" ;;
        redis)    args="--broker redis --redis-prefix $PREFIX"; pid=$REDIS_PID ;;
        nats)     args="$NATS --nats-prefix ${PREFIX}-f"; pid=$NATS_PID ;;
        nats-mem) args="$NATS --nats-prefix ${PREFIX}-m --nats-storage memory"; pid=$NATS_PID ;;
      esac
      "$HUB" bench fanout --spawn 1 --serve-args "$args" ${pid:+--broker-pid $pid} \
        --subs "$subs" --rooms "$rooms" --pubs "$pubs" --rate "$rate" --seconds "$secs" --size "$size" \
        --label "$name/$engine" --json | tail -1
    done
  done
done
