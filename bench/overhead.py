#!/usr/bin/env python3
"""The cost of a feature on a REST run, off against on (issue 21's targets):
- `otel`: OTLP export of traces and metrics (at most 3%), to a local OTLP/HTTP sink;
- `encryption`: `[store] encryption_key` (at most 15%), on the run and on the queries.

A project loads ROWS rows of `events` in pages of PAGE rows through the http connector
(a local server, one request per page: one span each); runs alternate off and on, five each
after a warm-up. Reports the medians and their ratio, and appends to
bench/results/results.jsonl.

usage: overhead.py otel|encryption HAKIRI_BIN [ROWS=200000] [PAGE=1000]
"""
import http.server
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import rss  # noqa: E402
feature = sys.argv[1]
assert feature in ("otel", "encryption"), __doc__
hakiri = sys.argv[2]
rows = int(sys.argv[3]) if len(sys.argv) > 3 else 200_000
page = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
KEY = "8f1c2a4b6d8e0f1a3c5e7a9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f"


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


def project(d, encrypted):
    with open(os.path.join(d, "hakiri.toml"), "w") as f:
        if encrypted:
            f.write('[store]\nencryption_key = "env:HAKIRI_STORE_KEY"\n\n')
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


QUERIES = ["SELECT count(*) FROM events", "SELECT kind, sum(amount) FROM events GROUP BY kind ORDER BY kind",
           "SELECT count(*) FROM events WHERE amount BETWEEN 100 AND 200"]

base = serve()
with tempfile.TemporaryDirectory() as plain, tempfile.TemporaryDirectory() as secret:
    project(plain, False)
    project(secret, feature == "encryption")
    times = {"off": [], "on": []}
    peak = {"off": 0.0, "on": 0.0}
    query_ms = {"off": [], "on": []}
    for i in range(11):
        mode = "off" if i % 2 == 0 else "on"
        d = plain if mode == "off" else secret
        env = dict(os.environ)
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        env["HAKIRI_STORE_KEY"] = KEY
        if mode == "on" and feature == "otel":
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = base
        code, stdout, stderr, elapsed, mib = rss.run([hakiri, "--project", d, "run", "events"], env)
        if code != 0:
            sys.exit(stderr)
        assert f"{rows} rows written" in stdout, stdout
        if i >= 1:  # the first run warms up
            times[mode].append(elapsed)
            peak[mode] = max(peak[mode], mib)
            if feature == "encryption":
                args = [hakiri, "--project", d, "sql", "-c", "\\timing"]
                for q in QUERIES:
                    args += ["-c", q + ";"]
                text = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
                import re
                query_ms[mode].append(sum(float(t) for t in re.findall(r"Time: ([0-9.]+) ms", text)))

off, on = statistics.median(times["off"]), statistics.median(times["on"])
print(f"{feature}: {rows} rows in pages of {page} ({rows // page} requests): "
      f"off {off:.3f} s ({peak['off']:.0f} MiB peak), on {on:.3f} s ({peak['on']:.0f} MiB peak), "
      f"ratio {on / off:.3f}")
if feature == "encryption":
    qoff, qon = statistics.median(query_ms["off"]), statistics.median(query_ms["on"])
    print(f"encryption: the {len(QUERIES)} queries took {qoff:.1f} ms plain, {qon:.1f} ms encrypted, ratio {qon / qoff:.3f}")
for mode, t in (("off", off), ("on", on)):
    r = {"workload": f"rest-offset-{page}", "rows": rows, "system": f"hakiri, {feature} {mode}",
         "runs": len(times[mode]), "median_s": round(t, 4), "min_s": round(min(times[mode]), 4),
         "max_s": round(max(times[mode]), 4), "rows_per_s": round(rows / t),
         "peak_rss_mib": round(peak[mode], 1), "load1": round(os.getloadavg()[0], 2),
         "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with open(os.path.join(here, "results", "results.jsonl"), "a") as f:
        f.write(json.dumps(r) + "\n")
