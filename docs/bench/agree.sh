#!/bin/bash
# Does `hubcast bench fanout` measure what ../shared/bench/wsload measures?
# Runs both tools, alternately, against a fresh hubcast server for each run,
# with the same scenario (compare's NAME:subs:rooms:pubs:rate:seconds:size).
#
#   docs/bench/agree.sh [ROUNDS] [SCENARIO...]
#
# Needs Go for wsload (see ../shared/bench/compare). Prints one JSON line
# per run, labelled SCENARIO/wsload or SCENARIO/bench.
set -euo pipefail
ROUNDS=${1:-3}; shift || true
SCEN=("$@")
[ ${#SCEN[@]} -gt 0 ] || SCEN=(moderate:2000:20:4:500:6:100 saturate:2000:10:8:0:6:100)
HUB=${HUB:-target/release/hubcast}
T=${TMPDIR:-/tmp}/hubcast-agree; mkdir -p "$T"
../shared/bench/wsload/build "$T/wsload"
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 100); do curl -fs "http://$1/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done; exit 1; }
for r in $(seq "$ROUNDS"); do
  for s in "${SCEN[@]}"; do
    IFS=: read -r name subs rooms pubs rate secs size <<<"$s"
    for tool in wsload bench; do
      p=$(port); "$HUB" serve --listen 127.0.0.1:$p >"$T/hubcast.log" 2>&1 & pid=$!
      wait_up 127.0.0.1:$p
      if [ $tool = wsload ]; then
        "$T/wsload" -url ws://127.0.0.1:$p/ws -subs $subs -rooms $rooms -pubs $pubs -rate $rate \
          -duration ${secs}s -size $size -src-ips 20 -pid $pid -label "$name/wsload" 2>>"$T/err" | tail -1
      else
        "$HUB" bench fanout --url ws://127.0.0.1:$p/ws --pid $pid --subs $subs --rooms $rooms --pubs $pubs \
          --rate $rate --seconds $secs --size $size --src-ips 20 --label "$name/bench" --json 2>>"$T/err" | tail -1
      fi
      kill $pid; wait $pid 2>/dev/null || true
    done
  done
done
