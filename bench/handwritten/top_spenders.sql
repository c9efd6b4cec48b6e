-- top_spenders: top revenue quintile of the universe, 5,000+ in 365 days, bought in the last 90 days.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), orders AS (
  SELECT user_id,
    max(occurred_at) AS last_order_at,
    sum(amount::DECIMAL(38, 6)) FILTER (WHERE occurred_at > {as_of} - INTERVAL 365 DAY)::DOUBLE AS revenue_365d
  FROM raw.events
  WHERE event_name = 'purchase' AND occurred_at <= {as_of}
  GROUP BY user_id
), scored AS (
  SELECT u.user_id, o.last_order_at, coalesce(o.revenue_365d, 0) AS revenue_365d,
    least(5, 1 + floor(percent_rank() OVER (ORDER BY coalesce(o.revenue_365d, 0)) * 5)) AS monetary_score
  FROM universe u LEFT JOIN orders o ON o.user_id = u.user_id
)
SELECT user_id
FROM scored
WHERE monetary_score = 5 AND revenue_365d >= 5000
  AND last_order_at > {as_of} - INTERVAL 90 DAY AND last_order_at <= {as_of}
