-- Loads bench/data/ndjson/events_n{N}.ndjson (written by gen.py) into table events_n{N}, the
-- table layout of ../shared/bench-peers. psql variables: n (row count), src (ndjson path,
-- read by the client with \copy, so the server needs no access to the file).
\set tbl events_n:n
DROP TABLE IF EXISTS :tbl;
DROP TABLE IF EXISTS raw_json;
CREATE UNLOGGED TABLE raw_json (doc text);
\set copy '\\copy raw_json FROM ' :'src'
:copy
CREATE TABLE :tbl (
  id bigint PRIMARY KEY,
  updated_at timestamptz NOT NULL,
  user_login text NOT NULL,
  kind text NOT NULL,
  amount double precision NOT NULL,
  tags text[] NOT NULL,
  payload jsonb NOT NULL
);
INSERT INTO :tbl
SELECT (d->>'id')::bigint, (d->>'updated_at')::timestamptz, d->>'user_login', d->>'kind',
       (d->>'amount')::float8, ARRAY(SELECT jsonb_array_elements_text(d->'tags')), d->'payload'
FROM (SELECT doc::jsonb AS d FROM raw_json) s;
DROP TABLE raw_json;
VACUUM (ANALYZE) :tbl;
