#!/usr/bin/env python3
"""Deterministic `events` data for Hakiri's benchmarks: the same arguments give the same bytes.

Writes under OUT (default bench/data):
  rest/n{N}/p00001.json ...  pages of PAGE rows: {"data": [...], "page": k,
                             "next": "<BASE>/n{N}/p{k+1}.json" | null, "next_cursor": "{k+1}" | null}
  ndjson/events_n{N}.ndjson  the same rows, one object per line (the Postgres load)
  rest/n{N}/nd/p{k}.ndjson   page k as NDJSON; nd/next.map maps it to the next page's token
Rows: id, updated_at (ISO-8601 UTC, rising with id), user_login (skewed), kind (weighted),
amount (2 decimals), tags (0-3 strings), payload {repo {id, name}, ref, size, meta {score, draft}}.
"""
import argparse
import datetime
import json
import os
import random

KINDS = ["push", "pull_request", "issues", "issue_comment", "watch", "fork", "create", "delete", "release"]
WEIGHTS = [40, 15, 10, 12, 10, 5, 4, 3, 1]
TAGS = ["bug", "feature", "docs", "infra", "perf", "security", "ci", "ui", "api", "db",
        "cli", "deps", "test", "refactor", "build", "release", "triage", "wontfix"]
START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def events(n, seed):
    rng = random.Random(seed)
    for i in range(1, n + 1):
        repo = rng.randrange(1, 20000)
        yield {
            "id": i,
            "updated_at": (START + datetime.timedelta(seconds=7 * i + i % 5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "user_login": f"user{int(50000 * rng.random() ** 3):05d}",
            "kind": rng.choices(KINDS, WEIGHTS)[0],
            "amount": round(rng.random() * 1000, 2),
            "tags": rng.sample(TAGS, rng.randrange(0, 4)),
            "payload": {
                "repo": {"id": repo, "name": f"org{repo % 97}/repo{repo}"},
                "ref": "refs/heads/main" if rng.random() < 0.7 else f"refs/heads/feat-{rng.randrange(1000)}",
                "size": rng.randrange(1, 20),
                "meta": {"score": round(rng.random(), 4), "draft": rng.random() < 0.1},
            },
        }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--page", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--out", default=os.path.join(here, "data"))
    a = ap.parse_args()
    pages = (a.rows + a.page - 1) // a.page
    rest = os.path.join(a.out, "rest", f"n{a.rows}")
    os.makedirs(os.path.join(rest, "nd"), exist_ok=True)
    nd_next = open(os.path.join(rest, "nd", "next.map"), "w")
    os.makedirs(os.path.join(a.out, "ndjson"), exist_ok=True)
    rows = events(a.rows, a.seed)
    dump = lambda o: json.dumps(o, separators=(",", ":"))
    with open(os.path.join(a.out, "ndjson", f"events_n{a.rows}.ndjson"), "w") as nd:
        for k in range(1, pages + 1):
            data = [next(rows) for _ in range(min(a.page, a.rows - (k - 1) * a.page))]
            last = k == pages
            body = {
                "data": data,
                "page": k,
                "next": None if last else f"{a.base_url}/n{a.rows}/p{k + 1:05d}.json",
                "next_cursor": None if last else f"{k + 1:05d}",
            }
            with open(os.path.join(rest, f"p{k:05d}.json"), "w") as f:
                f.write(dump(body))
            nd.writelines(dump(r) + "\n" for r in data)
            # The same page as NDJSON for the WASM pass-through guest, its next token
            # (sent by nginx as x-next-token) in the map bench/run gives nginx.
            with open(os.path.join(rest, "nd", f"p{k:05d}.ndjson"), "w") as f:
                f.writelines(dump(r) + "\n" for r in data)
            if not last:
                nd_next.write(f'"n{a.rows}/{k:05d}" "{k + 1:05d}";\n')
    nd_next.close()


if __name__ == "__main__":
    main()
