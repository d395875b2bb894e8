SELECT count(*) AS n FROM events
