SELECT kind, count(*) AS n, sum(amount) AS total FROM events GROUP BY kind ORDER BY total DESC
