SELECT count(*) AS n, sum(amount) AS total FROM events WHERE updated_at >= TIMESTAMP '2024-01-20T00:00:00Z' AND updated_at < TIMESTAMP '2024-01-27T00:00:00Z'
