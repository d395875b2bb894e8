SELECT user_login, count(*) AS n FROM events GROUP BY user_login ORDER BY n DESC, user_login LIMIT 10
