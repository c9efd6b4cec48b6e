-- abandoned_cart: the latest cart_add of the last 48 hours has no purchase after it.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), last_cart AS (
  SELECT user_id, max(occurred_at) AS t0
  FROM raw.events
  WHERE event_name = 'cart_add' AND occurred_at > {as_of} - INTERVAL 48 HOUR AND occurred_at <= {as_of}
  GROUP BY user_id
)
SELECT c.user_id
FROM last_cart c JOIN universe u ON u.user_id = c.user_id
WHERE NOT EXISTS (
  SELECT 1 FROM raw.events p
  WHERE p.user_id = c.user_id AND p.event_name = 'purchase' AND p.occurred_at > c.t0 AND p.occurred_at <= {as_of}
)
