-- new_visitors: page views on exactly one UTC day of the last 30.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.event_name = 'page_view' AND e.occurred_at > {as_of} - INTERVAL 30 DAY AND e.occurred_at <= {as_of}
GROUP BY e.user_id
HAVING count(DISTINCT e.occurred_at::DATE) = 1
