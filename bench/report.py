#!/usr/bin/env python3
"""The latest result per (workload, rows, system) as a markdown table, with Hakiri's ratio to
each peer: rows/s ratio for loads (above 1: Hakiri is faster), time ratio for queries and
no-op runs (below 1: Hakiri is faster)."""
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
latest = {}
with open(os.path.join(here, "results", "results.jsonl")) as f:
    for line in f:
        r = json.loads(line)
        latest[(r["workload"], r["rows"], r["system"])] = r
print("| workload | rows | system | median | rows/s | peak RSS | Hakiri vs this |")
print("|---|---:|---|---:|---:|---:|---|")
for (workload, rows, system), r in sorted(latest.items()):
    hakiri = next((h for (w, n, s), h in latest.items()
                   if w == workload and n == rows and s.startswith("hakiri")), None)
    ratio = ""
    if hakiri and not system.startswith("hakiri"):
        if r.get("rows_per_s") and not workload.startswith(("query", "noop")):
            ratio = f"{hakiri['rows_per_s'] / r['rows_per_s']:.2f}x rows/s"
        else:
            ratio = f"{hakiri['median_s'] / r['median_s']:.2f}x time"
    rss = f"{r['peak_rss_mib']} MiB" if r.get("peak_rss_mib") else ""
    rps = f"{r['rows_per_s']:,}" if r.get("rows_per_s") else ""
    median = f"{r['median_s'] * 1000:.2f} ms" if r["median_s"] < 1 else f"{r['median_s']:.2f} s"
    print(f"| {workload} | {rows:,} | {system} | {median} | {rps} | {rss} | {ratio} |")
