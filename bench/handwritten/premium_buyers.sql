-- premium_buyers: in the last 180 days, a purchase of 5,000 or more and none under 500.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.event_name = 'purchase' AND e.occurred_at > {as_of} - INTERVAL 180 DAY AND e.occurred_at <= {as_of}
GROUP BY e.user_id
HAVING max(e.amount) >= 5000 AND min(e.amount) >= 500
