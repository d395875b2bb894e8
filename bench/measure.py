#!/usr/bin/env python3
"""Runs a command several times under GNU time and records the median.

usage: measure.py --workload W --rows N --system S [--runs 3] [--prep CMD] [--check CMD]
                  [--expect ROWS] -- COMMAND...
`--prep` runs (untimed) before each run; `--check` runs after the last run and must print
`--expect` (the row count the command should have produced). One JSON line is appended to
bench/results/results.jsonl: median/min/max wall seconds, rows/s, peak RSS (MiB) of the
largest process the command waited for.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--workload", required=True)
ap.add_argument("--rows", type=int, required=True)
ap.add_argument("--system", required=True)
ap.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
ap.add_argument("--prep")
ap.add_argument("--check")
ap.add_argument("--expect", type=int)
ap.add_argument("command", nargs=argparse.REMAINDER)
a = ap.parse_args()
command = a.command[1:] if a.command[:1] == ["--"] else a.command

walls, rss = [], []
for _ in range(a.runs):
    if a.prep:
        subprocess.run(a.prep, shell=True, check=True)
    started = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{a.system}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    walls.append(wall)
    rss.append(int(m.group(1)) / 1024 if m else None)
if a.check:
    got = subprocess.run(a.check, shell=True, capture_output=True, text=True).stdout.strip()
    if a.expect is not None and got != str(a.expect):
        sys.exit(f"{a.system}: produced {got!r} rows, expected {a.expect}")
median = statistics.median(walls)
record = {
    "workload": a.workload, "rows": a.rows, "system": a.system, "runs": a.runs,
    "median_s": round(median, 4), "min_s": round(min(walls), 4), "max_s": round(max(walls), 4),
    "rows_per_s": round(a.rows / median) if a.rows else None,
    "peak_rss_mib": round(max(r for r in rss if r is not None), 1) if any(rss) else None,
    "load1": round(os.getloadavg()[0], 2), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
}
os.makedirs(os.path.join(here, "results"), exist_ok=True)
with open(os.path.join(here, "results", "results.jsonl"), "a") as f:
    f.write(json.dumps(record) + "\n")
print(f"{a.workload:<22} {a.rows:>9} {a.system:<40} {median:8.3f} s  "
      f"{record['rows_per_s'] or 0:>10} rows/s  {record['peak_rss_mib']} MiB")
