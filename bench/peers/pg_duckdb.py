#!/usr/bin/env python3
"""DuckDB's postgres scanner: COPY (SELECT * FROM postgres_scan(...)) TO one Parquet file.
The extension is loaded by path from the PyPI wheel (`bench/run setup` places it), since
DuckDB's extension server is out of reach."""
import sys
import duckdb

ext, dsn, table, out, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute(f"COPY (SELECT * FROM postgres_scan('{dsn}', 'public', '{table}')) TO '{out}' (FORMAT parquet, COMPRESSION snappy)")
n = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
assert n == rows, f"{n} rows written, expected {rows}"
