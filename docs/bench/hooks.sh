#!/usr/bin/env bash
# Publish throughput and delivery latency with a publish hook (every room
# `publish = "hook"`, a local node backend that checks each signature)
# against the same load without hooks, three runs each, alternating.
#   docs/bench/hooks.sh target/release/hubcast [FANOUT ARGS] > docs/bench/DATE-hooks.jsonl
set -euo pipefail
bin=${1:-target/release/hubcast}
shift || true
# The fanout load; other arguments replace it.
load=(--subs 200 --rooms 10 --pubs 8 --rate 0 --window 16 --seconds 6)
[ $# -gt 0 ] && load=("$@")
dir=$(mktemp -d)
secret=bench-hook-secret-0123
node "$(dirname "$0")/hook-backend.mjs" "$secret" > "$dir/port" &
backend=$!
trap 'kill $backend; rm -rf "$dir"' EXIT
while [ ! -s "$dir/port" ]; do sleep 0.1; done
port=$(cat "$dir/port")
# No frame rate limit in either: publishers as fast as acks allow would
# otherwise meet rate_limit_per_conn (1000/s) without hooks and not with.
printf 'rate_limit_per_conn = 0\n\n[hooks]\nurl = "http://127.0.0.1:%s/hooks"\nsecret = "%s"\n\n[[rooms]]\nmatch = "**"\npublish = "hook"\n' \
  "$port" "$secret" > "$dir/hook.toml"
printf 'rate_limit_per_conn = 0\n' > "$dir/none.toml"
for run in 1 2 3; do
  for variant in none hook; do
    "$bin" bench --spawn 1 --serve-args "--config $dir/$variant.toml" --json --label "$variant-$run" \
      fanout "${load[@]}"
  done
done
