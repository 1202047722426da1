#!/bin/bash
# One node on a private nats-server (port 14333, store in /tmp/natsprof,
# removed after), 100 subscribers in 50 rooms, 4 publishers at 1,000/s for
# 15 s: the node's and the nats-server's CPU per publish.
#   docs/bench/natscpu.sh BINARY LABEL
bin=$1; label=$2
pkill -f "listen 127.0.0.1:18080" ; pkill -f "nats-server -a 127.0.0.1 -p 14333"; sleep 1
rm -rf /tmp/natsprof; mkdir /tmp/natsprof
nats-server -a 127.0.0.1 -p 14333 -js -sd /tmp/natsprof > /tmp/natsprof.log 2>&1 &
sleep 1
$bin serve --listen 127.0.0.1:18080 --broker nats --nats-url nats://127.0.0.1:14333 --nats-prefix prof > /tmp/prof-node.log 2>&1 &
sleep 2
NODE=$(pgrep -f "listen 127.0.0.1:18080"); NATSPID=$(pgrep -f "nats-server -a 127.0.0.1 -p 14333")
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
n0=$(cpu $NODE); s0=$(cpu $NATSPID)
out=$($bin bench fanout --url ws://127.0.0.1:18080/ws --subs 100 --rooms 50 --pubs 4 --rate 1000 --seconds 15 --size 100 --json 2>/dev/null | tail -1)
n1=$(cpu $NODE); s1=$(cpu $NATSPID)
pub=$(echo "$out" | grep -o '"published":[0-9]*' | cut -d: -f2)
p99=$(echo "$out" | grep -o '"p99_ms":[0-9.]*' | cut -d: -f2)
lost=$(echo "$out" | grep -o '"lost":[0-9]*' | cut -d: -f2)
tk=$(getconf CLK_TCK)
python3 -c "print('$label', 'published', $pub, 'lost', $lost, 'p99_ms', $p99, 'node_us_per_pub', round(($n1-$n0)*1e6/$tk/$pub,1), 'nats_us_per_pub', round(($s1-$s0)*1e6/$tk/$pub,1))"
kill $NODE $NATSPID; sleep 1; rm -rf /tmp/natsprof
