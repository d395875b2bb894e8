"""dlt's rest_api source writing Parquet files: link (body.next) or cursor pagination."""
import sys

import dlt
from dlt.sources.rest_api import rest_api_source

base, rows, style, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if style == "link":
    endpoint = {"path": f"n{rows}/p00001.json", "data_selector": "data",
                "paginator": {"type": "json_link", "next_url_path": "next"}}
else:
    endpoint = {"path": f"n{rows}/events", "data_selector": "data",
                "paginator": {"type": "cursor", "cursor_path": "next_cursor", "cursor_param": "cursor"}}
source = rest_api_source({"client": {"base_url": base + "/"},
                          "resources": [{"name": "events", "endpoint": endpoint}]})
pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=out + "/.dlt",
                        destination=dlt.destinations.filesystem(bucket_url=out + "/files"),
                        dataset_name="bench")
pipeline.run(source, loader_file_format="parquet")
