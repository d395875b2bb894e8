#!/usr/bin/env python3
"""Query time after many small appends, before and after `hakiri context compact`, against
the same rows loaded in one run (issue 21's target: after compaction within 1.1x of one run).

The four benchmark queries (bench/queries/*.sql) over an `events` table of ROWS rows: one
project loads them in one run; another appends ROWS/APPENDS rows APPENDS times (one file
each), is timed, compacted, and timed again. Each query: one warm-up, then the median of
five (`\\timing` inside one `hakiri sql`). Results go to bench/results/results.jsonl.

usage: compaction.py HAKIRI_BIN [ROWS=1000000] [APPENDS=1000]
"""
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import rss  # noqa: E402
hakiri = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
appends = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
names = sorted(f for f in os.listdir(os.path.join(here, "queries")) if f.endswith(".sql"))
KINDS = ["push", "issue", "pull_request", "release", "fork", "watch"]


def write_csv(path, n, seed):
    rnd = random.Random(seed)
    with open(path, "w") as f:
        f.write("id,kind,user_login,amount,updated_at\n")
        for i in range(n):
            day = 1 + (i * 31) // max(n, 1)
            f.write(f"{i},{rnd.choice(KINDS)},user{rnd.randint(0, 4999)},{rnd.randint(1, 10000)},"
                    f"2024-01-{min(day, 31):02d}T{rnd.randint(0, 23):02d}:00:00Z\n")


def project(dir, n, seed):
    os.makedirs(os.path.join(dir, "data"))
    write_csv(os.path.join(dir, "data", "events.csv"), n, seed)
    with open(os.path.join(dir, "hakiri.toml"), "w") as f:
        f.write('[sources.files]\ntype = "file"\ntables.events.path = "data/events.csv"\n\n'
                '[pipelines.events]\nsql = "INSERT INTO context.events SELECT * FROM files.events"\n')


def sql_rss(dir, *statements):
    """`hakiri sql -c ...` in `dir`: its output and the process's peak RSS (MiB)."""
    args = [hakiri, "--project", dir, "sql"]
    for s in statements:
        args += ["-c", s]
    code, out, err, _, mib = rss.run(args)
    if code != 0:
        sys.exit(err)
    return out, mib


def sql(dir, *statements):
    return sql_rss(dir, *statements)[0]


def time_queries(dir):
    """Per query: (median ms, peak RSS MiB of the process that ran it six times)."""
    out = {}
    for name in names:
        q = open(os.path.join(here, "queries", name)).read().strip().rstrip(";")
        text, mib = sql_rss(dir, "\\timing", *([q + ";"] * 6))
        times = [float(t) for t in re.findall(r"Time: ([0-9.]+) ms", text)]
        out[name.removesuffix(".sql")] = (statistics.median(times[1:]), mib)
    return out


def record(query, system, measured):
    ms, mib = measured
    r = {"workload": f"query-{query}", "rows": rows, "system": system, "runs": 5,
         "median_s": round(ms / 1000, 6), "min_s": None, "max_s": None, "rows_per_s": None,
         "peak_rss_mib": round(mib, 1), "load1": round(os.getloadavg()[0], 2),
         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(here, "results", "results.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")


def appended(dir):
    """The same rows, in APPENDS files: each run appends the whole (smaller) CSV."""
    project(dir, rows // appends, 7)
    t0 = time.time()
    sql(dir, "; ".join(["RUN PIPELINE events"] * appends))
    print(f"{appends} appends of {rows // appends} rows: {time.time() - t0:.1f} s", file=sys.stderr)


def compact(dir, *extra):
    code, out, err, seconds, mib = rss.run([hakiri, "--project", dir, "context", "compact", *extra])
    if code != 0:
        sys.exit(err)
    print(f"compaction {' '.join(extra)}: {out.strip()} in {seconds:.2f} s, {mib:.0f} MiB peak")


with tempfile.TemporaryDirectory() as tmp:
    one, many, sorted_ = (os.path.join(tmp, d) for d in ("one", "many", "sorted"))
    project(one, rows, 7)
    sql(one, "RUN PIPELINE events")
    appended(many)
    appended(sorted_)
    base = time_queries(one)
    before = time_queries(many)
    compact(many)
    after = time_queries(many)
    # Each append spans the whole month, so the merged file's row groups do too; sorted by
    # the time column, the range query prunes row groups again.
    compact(sorted_, "events", "--sort-by", "updated_at")
    after_sorted = time_queries(sorted_)

print(f"{'query':<16} {'one run':>10} {'appends':>10} {'compacted':>10} {'sorted':>10} "
      f"{'before/one':>11} {'after/one':>10} {'sorted/one':>11} {'peak RSS one/compacted':>23}")
for q in base:
    record(q, "hakiri, one run", base[q])
    record(q, f"hakiri, {appends} appends", before[q])
    record(q, f"hakiri, {appends} appends compacted", after[q])
    record(q, f"hakiri, {appends} appends compacted, sorted by updated_at", after_sorted[q])
    (b, bm), (x, _), (a, am), (s_, _) = base[q], before[q], after[q], after_sorted[q]
    print(f"{q:<16} {b:9.1f}ms {x:9.1f}ms {a:9.1f}ms {s_:9.1f}ms "
          f"{x / b:10.2f}x {a / b:9.2f}x {s_ / b:10.2f}x {bm:10.0f}/{am:.0f} MiB")
