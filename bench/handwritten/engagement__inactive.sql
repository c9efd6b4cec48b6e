-- engagement__inactive: no message read in the last 90 days.
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
WHERE coalesce(r.reads_90d, 0) = 0
