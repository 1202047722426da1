#!/bin/bash
# One node on the memory engine, one node on Redis, two nodes on Redis:
# the same fan-out against each, ROUNDS times, all started by `hubcast bench
# --spawn` (subscribers and publishers spread over the nodes: connection i
# goes to node i mod N). Redis is the machine's (127.0.0.1:6379); its CPU per
# delivery comes from its pid. Keys go under a prefix removed at the end.
#
#   docs/bench/nodes.sh [ROUNDS] [NAME:subs:rooms:pubs:rate:seconds:size ...]
set -euo pipefail
ROUNDS=${1:-3}; shift || true
SCEN=("$@")
[ ${#SCEN[@]} -gt 0 ] || SCEN=(heavy:5000:50:4:2000:6:100 saturate:2000:10:8:0:6:100)
HUB=${HUB:-target/release/hubcast}
REDIS_PID=$(redis-cli info server | tr -d '\r' | awk -F: '/^process_id:/{print $2}')
PREFIX=hubcast-bench-nodes
trap 'redis-cli --scan --pattern "$PREFIX*" | xargs -r -n 500 redis-cli del >/dev/null' EXIT
for r in $(seq "$ROUNDS"); do
  for s in "${SCEN[@]}"; do
    IFS=: read -r name subs rooms pubs rate secs size <<<"$s"
    for setup in memory:1 redis:1 redis:2; do
      IFS=: read -r engine n <<<"$setup"
      args=""; [ "$engine" = redis ] && args="--broker redis --redis-prefix $PREFIX"
      "$HUB" bench fanout --spawn "$n" --serve-args "$args" --redis-pid "$REDIS_PID" \
        --subs $subs --rooms $rooms --pubs $pubs --rate $rate --seconds $secs --size $size \
        --label "$name/$engine-x$n" --json | tail -1
    done
  done
done
