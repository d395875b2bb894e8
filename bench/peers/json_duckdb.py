"""DuckDB converting the page files from local disk to one Parquet file (typed columns)."""
import sys

import duckdb

pages, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute(
    f"COPY (SELECT unnest(data, max_depth := 2) FROM read_json('{pages}/p*.json', "
    "maximum_object_size = 1000000000)) TO '" + out + "' (FORMAT parquet)"
)
