#!/usr/bin/env python3
"""The analytic queries, timed in-process: Hakiri (`hakiri sql` with `\\timing`, over the
context table a REST run loaded) and DuckDB (over the Parquet file it wrote from the same
pages). Each query runs once to warm up, then five times; the median is recorded per query.

usage: queries.py ROWS HAKIRI_BIN HAKIRI_PROJECT [DUCKDB_PYTHON PARQUET]
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
rows, hakiri, project = int(sys.argv[1]), sys.argv[2], sys.argv[3]
names = sorted(f for f in os.listdir(os.path.join(here, "queries")) if f.endswith(".sql"))


def record(name, system, ms):
    r = {"workload": f"query-{name}", "rows": rows, "system": system, "runs": 5,
         "median_s": round(ms / 1000, 6), "min_s": None, "max_s": None, "rows_per_s": None,
         "peak_rss_mib": None, "load1": round(os.getloadavg()[0], 2),
         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(here, "results", "results.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")
    print(f"query-{name:<18} {rows:>9} {system:<40} {ms:8.2f} ms")


for name in names:
    sql = open(os.path.join(here, "queries", name)).read().strip().rstrip(";")
    args = [hakiri, "--project", project, "sql", "-c", "\\timing"] + ["-c", sql + ";"] * 6
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    times = [float(t) for t in re.findall(r"Time: ([0-9.]+) ms", out)]
    assert len(times) == 6, out
    record(name.removesuffix(".sql"), "hakiri (context table)", statistics.median(times[1:]))

if len(sys.argv) > 5:
    out = subprocess.run([sys.argv[4], os.path.join(here, "peers", "query_duckdb.py"), sys.argv[5],
                          os.path.join(here, "queries")], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        name, ms = line.split()
        record(name, "duckdb (its own parquet)", float(ms))
