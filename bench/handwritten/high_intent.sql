-- high_intent: a /pricing page view in the last 30 days and a demo request ever.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.occurred_at <= {as_of} AND e.event_name IN ('page_view', 'demo_request')
GROUP BY e.user_id
HAVING count(*) FILTER (WHERE e.event_name = 'page_view' AND starts_with(e.path, '/pricing')
                          AND e.occurred_at > {as_of} - INTERVAL 30 DAY) > 0
   AND count(*) FILTER (WHERE e.event_name = 'demo_request') > 0
