#!/usr/bin/env python3
"""pgwire query latency: `hakiri serve` over a bench project's context table, queried by
psycopg (one connection, extended protocol) the way a BI tool or driver does. Per query
(`select 1` and the four analytic queries): one warm-up, then ten runs; the median is
recorded (workload pgwire-<query>). Beside it the report shows the same query's in-process
time (`hakiri sql`), so the difference is the wire's cost.

usage: pgwire.py ROWS HAKIRI_BIN HAKIRI_PROJECT   (the project's manifest gets a bench user)
"""
import json
import os
import statistics
import subprocess
import sys
import time

import psycopg

here = os.path.dirname(os.path.abspath(__file__))
rows, hakiri, project = int(sys.argv[1]), sys.argv[2], sys.argv[3]
manifest = os.path.join(project, "hakiri.toml")
text = open(manifest).read()
if "[serve.users.bench]" not in text:
    with open(manifest, "a") as f:
        f.write('\n[serve.users.bench]\npassword = "env:BENCH_HAKIRI_PASSWORD"\nrole = "read_only"\n')
env = dict(os.environ, BENCH_HAKIRI_PASSWORD="bench")
serve = subprocess.Popen([hakiri, "--project", project, "serve", "--pg-listen", "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
try:
    banner = serve.stdout.readline()
    port = int(banner.split("127.0.0.1:")[1].split()[0].rstrip(":"))
    queries = [("select_1", "select 1")]
    for name in sorted(f for f in os.listdir(os.path.join(here, "queries")) if f.endswith(".sql")):
        queries.append((name.removesuffix(".sql"),
                        open(os.path.join(here, "queries", name)).read().strip().rstrip(";")))
    with psycopg.connect(f"host=127.0.0.1 port={port} dbname=hakiri user=bench password=bench "
                         "sslmode=disable") as conn:
        for name, sql in queries:
            times = []
            for _ in range(11):
                t = time.perf_counter()
                conn.execute(sql).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            ms = statistics.median(times[1:])
            r = {"workload": f"pgwire-{name}", "rows": rows, "system": "hakiri serve + psycopg",
                 "runs": 10, "median_s": round(ms / 1000, 6), "min_s": round(min(times[1:]) / 1000, 6),
                 "max_s": round(max(times[1:]) / 1000, 6), "rows_per_s": None, "peak_rss_mib": None,
                 "load1": round(os.getloadavg()[0], 2),
                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            with open(os.path.join(here, "results", "results.jsonl"), "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"pgwire-{name:<16} {rows:>9} {'hakiri serve + psycopg':<40} {ms:8.2f} ms")
finally:
    serve.terminate()
    serve.wait(timeout=30)
