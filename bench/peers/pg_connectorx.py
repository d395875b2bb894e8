#!/usr/bin/env python3
"""connectorx read_sql (2 partitions on id) -> Arrow table -> pyarrow.parquet.write_table."""
import sys
import connectorx as cx
import pyarrow.parquet as pq

url, table, out, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t = cx.read_sql(url, f"SELECT * FROM {table}", return_type="arrow", partition_on="id", partition_num=2)
pq.write_table(t, out, compression="snappy")
assert t.num_rows == rows, f"{t.num_rows} rows, expected {rows}"
