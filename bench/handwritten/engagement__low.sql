-- engagement__low: fewer than 2 reads in the last 30 days, at least one in 90.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), reads AS (
  SELECT user_id,
    count(*) FILTER (WHERE occurred_at > {as_of} - INTERVAL 30 DAY) AS reads_30d,
    count(*) AS reads_90d
  FROM raw.events
  WHERE event_name = 'message_read' AND occurred_at > {as_of} - INTERVAL 90 DAY AND occurred_at <= {as_of}
  GROUP BY user_id
)
SELECT u.user_id
FROM universe u LEFT JOIN reads r ON r.user_id = u.user_id
WHERE coalesce(r.reads_30d, 0) < 2 AND coalesce(r.reads_90d, 0) >= 1
