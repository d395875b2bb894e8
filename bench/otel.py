#!/usr/bin/env python3
"""The cost of OpenTelemetry export on a run (issue 21's target: at most 3%).

One project loads ROWS rows of `events` from a CSV in pages of PAGE rows through the http
connector (served by a local static server, one request per page), so every page is a span;
runs alternate with OTLP export off and on (to a local OTLP/HTTP sink that answers 200), five
each after a warm-up. Reports the medians, their ratio and peak RSS, and appends to
bench/results/results.jsonl.

usage: otel.py HAKIRI_BIN [ROWS=200000] [PAGE=1000]
"""
import http.server
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
hakiri = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
page = int(sys.argv[3]) if len(sys.argv) > 3 else 1000


class Pages(http.server.BaseHTTPRequestHandler):
    """`/events?offset=N&limit=M` -> JSON records; an empty page ends the table."""

    def do_GET(self):
        from urllib.parse import parse_qs, urlparse
        q = parse_qs(urlparse(self.path).query)
        off, lim = int(q.get("offset", ["0"])[0]), int(q.get("limit", [str(page)])[0])
        recs = [{"id": i, "kind": ("push", "issue", "fork")[i % 3], "amount": i % 1000}
                for i in range(off, min(off + lim, rows))]
        body = json.dumps(recs).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # the OTLP sink
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def serve():
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pages)
    threading.Thread(target=s.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{s.server_address[1]}"


base = serve()
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "hakiri.toml"), "w") as f:
        f.write(f'''[sources.api]
type = "http"
base_url = "{base}"
schema = "id bigint, kind text, amount bigint"

[sources.api.tables.events]
path = "/events"
pagination = "offset"
page_size = {page}
offset_param = "offset"
limit_param = "limit"

[pipelines.events]
sql = "INSERT INTO context.events SELECT * FROM api.events"
mode = "replace"
''')
    times = {"off": [], "on": []}
    rss = {"off": 0.0, "on": 0.0}
    for i in range(11):
        mode = "off" if i % 2 == 0 else "on"
        env = dict(os.environ)
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        if mode == "on":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = base
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        out = subprocess.run([hakiri, "--project", d, "run", "events"], env=env,
                             capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if out.returncode != 0:
            sys.exit(out.stderr)
        assert f"{rows} rows written" in out.stdout, out.stdout
        if i >= 1:  # the first run warms up
            times[mode].append(elapsed)
        rss[mode] = max(rss[mode], resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, before / 1024)

off, on = statistics.median(times["off"]), statistics.median(times["on"])
print(f"{rows} rows in pages of {page} ({rows // page} requests): "
      f"OTel off {off:.3f} s, on {on:.3f} s, ratio {on / off:.3f} (peak RSS {rss['off']:.0f} / {rss['on']:.0f} MiB)")
for mode, t in (("off", off), ("on", on)):
    r = {"workload": f"rest-offset-{page}", "rows": rows, "system": f"hakiri, OTel export {mode}",
         "runs": len(times[mode]), "median_s": round(t, 4), "min_s": round(min(times[mode]), 4),
         "max_s": round(max(times[mode]), 4), "rows_per_s": round(rows / t),
         "peak_rss_mib": None, "load1": round(os.getloadavg()[0], 2),
         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(here, "results", "results.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")
