"""A Hakiri connector for cursor-paginated JSON APIs (the Stripe and Slack shape), in Python.

Each page is a JSON object whose `data` array holds the records and whose `next_cursor`
names where the next page starts (null on the last page); the next request passes it back
as `?after=`. The connector is a WebAssembly component of world `hakiri:connector/connector`
(../../../wit), built by ./build with componentize-py; Hakiri runs it sandboxed, so it can
reach only the hosts the source grants it (`allow_hosts`) and no files.

    [sources.api]
    type = "wasm"
    component = "connectors/cursor-api.wasm"
    allow_hosts = "api.example.com"
    url = "https://api.example.com/v1/items?limit=100"
    columns = "id:int64, name:utf8, amount:int64"

Pages cross to Hakiri as newline-delimited JSON, which it decodes against `columns`.
A token-cursor pipeline checkpoints the `next_cursor` of its pages, so a killed run resumes
where it stopped. A filter `id > N` (the `cursor_column`) is pushed into the request as
`after=N`, so `WHERE id > 5` asks the API only for what follows record 5.
"""

import json
from urllib.parse import urlsplit, urlencode, parse_qsl, urlunsplit

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Capabilities,
    CompareOp,
    ConnectorSpec,
    DataType,
    Error_Auth,
    Error_Fatal,
    Error_InvalidConfig,
    Error_RateLimited,
    Error_Transient,
    Field,
    OptionSpec,
    Pushdown,
    RateLimit,
    ReadResponse,
    Rows_Ndjson,
    Scalar_Int,
    Scalar_Text,
    TableInfo,
)

VERSION = "0.1.0"
TYPES = {
    "boolean": DataType.BOOLEAN,
    "int64": DataType.INT64,
    "float64": DataType.FLOAT64,
    "utf8": DataType.UTF8,
    "timestamp_us": DataType.TIMESTAMP_US,
    "json": DataType.JSON,
}
OPTIONS = [
    OptionSpec("url", True, False, "the first page's URL, with any fixed query parameters"),
    OptionSpec("columns", True, False, "the records' columns as `name:type, ...`; types: " + ", ".join(TYPES)),
    OptionSpec("table", False, False, "the table's name (default items)"),
    OptionSpec("records", False, False, "the page's key holding the records (default data)"),
    OptionSpec("next_cursor", False, False, "the page's key holding the next cursor, null on the last page (default next_cursor)"),
    OptionSpec("cursor_param", False, False, "the query parameter the cursor is sent in (default after)"),
    OptionSpec("cursor_column", False, False, "the column whose `> N` filter is sent as the cursor (default id; empty: none)"),
    OptionSpec("token", False, True, "a bearer token, as a secret reference such as env:API_TOKEN"),
]


def fail(kind, message):
    raise Err(kind(message))


def options(config):
    o = dict(config)
    cols = []
    for item in o["columns"].split(","):
        name, _, ty = item.strip().partition(":")
        if not name or ty.strip() not in TYPES:
            fail(Error_InvalidConfig, f"columns: '{item.strip()}' is not `name:type` with a type of {', '.join(TYPES)}")
        cols.append((name.strip(), TYPES[ty.strip()]))
    return {
        "url": o["url"],
        "columns": cols,
        "table": o.get("table", "items"),
        "records": o.get("records", "data"),
        "next_cursor": o.get("next_cursor", "next_cursor"),
        "cursor_param": o.get("cursor_param", "after"),
        "cursor_column": o.get("cursor_column", "id"),
        "token": o.get("token"),
    }


def with_query(url, extra):
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(extra.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def get(url, token):
    headers = [("accept", "application/json")]
    if token:
        headers.append(("authorization", f"Bearer {token}"))
    # A refused host raises Err(capability-denied) here, which goes on to Hakiri as it is.
    resp = host.http_request(host.Request("GET", url, headers, None))
    if resp.status in (401, 403):
        fail(Error_Auth, f"GET {url} returned {resp.status}: check the source's token")
    if resp.status == 429:
        after = dict((k.lower(), v) for k, v in resp.headers).get("retry-after", "1")
        ms = int(float(after) * 1000) if after.replace(".", "", 1).isdigit() else 1000
        raise Err(Error_RateLimited(RateLimit(ms, f"GET {url} returned 429")))
    if resp.status >= 500:
        fail(Error_Transient, f"GET {url} returned {resp.status}")
    if resp.status != 200:
        fail(Error_Fatal, f"GET {url} returned {resp.status}: {bytes(resp.body[:200]).decode('utf-8', 'replace')}")
    try:
        return json.loads(resp.body)
    except ValueError as e:
        fail(Error_Fatal, f"GET {url} did not return JSON ({e})")


class Source(exports.Source):
    def spec(self):
        # This example reads the test fixture on 127.0.0.1; a connector for one API names
        # that API's host here, and a source must grant it with allow_hosts.
        return ConnectorSpec("cursor-api", VERSION, OPTIONS, Capabilities(["127.0.0.1"], []))

    def discover(self, config):
        o = options(config)
        push = [Pushdown(o["cursor_column"], True)] if o["cursor_column"] else []
        fields = [Field(n, t, n != o["cursor_column"]) for n, t in o["columns"]]
        return [TableInfo(o["table"], fields, None, push)]

    def read(self, config, table, request):
        o = options(config)
        if table != o["table"]:
            fail(Error_InvalidConfig, f"no table '{table}': this source has '{o['table']}'")
        after = request.resume_token
        inexact = []
        for i, f in enumerate(request.filters):
            # `cursor > N` is what `after=N` means; anything else Hakiri applies itself.
            if f.column == o["cursor_column"] and f.op == CompareOp.GT and isinstance(f.value, (Scalar_Int, Scalar_Text)):
                if after is None:
                    after = str(f.value.value)
            else:
                inexact.append(i)
        url = o["url"] if after is None else with_query(o["url"], {o["cursor_param"]: after})
        page = get(url, o["token"])
        records = page.get(o["records"]) if isinstance(page, dict) else None
        if not isinstance(records, list):
            fail(Error_Fatal, f"GET {url}: the page has no '{o['records']}' array")
        nxt = page.get(o["next_cursor"])
        # A json column crosses as its JSON text (the host decodes NDJSON strictly by type).
        nested = [n for n, t in o["columns"] if t == DataType.JSON]
        if nested:
            for r in records:
                for n in nested:
                    v = r.get(n)
                    if v is not None and not isinstance(v, str):
                        r[n] = json.dumps(v, separators=(",", ":"))
        body = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        return ReadResponse(Rows_Ndjson(body.encode()), None if nxt is None else str(nxt), inexact)
