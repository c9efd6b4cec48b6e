-- campaign_responders: the latest campaign read of the last 14 days got a link click within 10 minutes.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), last_read AS (
  SELECT user_id, max(occurred_at) AS t0
  FROM raw.events
  WHERE event_name = 'message_read' AND utm_campaign IS NOT NULL
    AND occurred_at > {as_of} - INTERVAL 14 DAY AND occurred_at <= {as_of}
  GROUP BY user_id
)
SELECT r.user_id
FROM last_read r JOIN universe u ON u.user_id = r.user_id
WHERE EXISTS (
  SELECT 1 FROM raw.events c
  WHERE c.user_id = r.user_id AND c.event_name = 'link_click'
    AND c.occurred_at > r.t0 AND c.occurred_at <= r.t0 + INTERVAL 10 MINUTE AND c.occurred_at <= {as_of}
)
