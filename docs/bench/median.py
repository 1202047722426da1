#!/usr/bin/env python3
"""Medians per label of `hubcast bench --json` / wsload result lines.

    python3 docs/bench/median.py FILE.jsonl [figure ...]
"""
import json, statistics, sys

FIGS = ["deliveries_per_s", "lost", "p50_ms", "p99_ms", "server_cpu_us_per_delivery",
        "redis_cpu_us_per_delivery", "kib_per_conn"]
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
figs = sys.argv[2:] or FIGS
by = {}
for r in rows:
    by.setdefault(r["label"], []).append(r)
print("%-30s %3s " % ("label", "n") + " ".join("%14s" % f[:14] for f in figs))
for label, rs in by.items():
    cells = []
    for f in figs:
        vals = [r[f] for r in rs if isinstance(r.get(f), (int, float))]
        cells.append("%14s" % (("%.2f" % statistics.median(vals)) if vals else "-"))
    print("%-30s %3d " % (label, len(rs)) + " ".join(cells))
