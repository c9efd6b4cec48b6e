-- non_responsive: replied before, but not in the last 15 days.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.event_name = 'message_reply' AND e.occurred_at <= {as_of}
GROUP BY e.user_id
HAVING max(e.occurred_at) < {as_of} - INTERVAL 15 DAY
