"""DuckDB querying a Parquet file in-process: each query once to warm up, then five times;
prints `name median_ms` per query."""
import os
import statistics
import sys
import time

import duckdb

parquet, queries = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET TimeZone = 'UTC'")
con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{parquet}')")
for name in sorted(os.listdir(queries)):
    sql = open(os.path.join(queries, name)).read()
    con.execute(sql).fetchall()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        con.execute(sql).fetchall()
        times.append((time.perf_counter() - t) * 1000)
    print(name.removesuffix(".sql"), round(statistics.median(times), 3))
