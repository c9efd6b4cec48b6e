-- pricing_page_visitors: two or more views of /pricing in the last 14 days.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.event_name = 'page_view' AND e.path = '/pricing'
  AND e.occurred_at > {as_of} - INTERVAL 14 DAY AND e.occurred_at <= {as_of}
GROUP BY e.user_id
HAVING count(*) >= 2
