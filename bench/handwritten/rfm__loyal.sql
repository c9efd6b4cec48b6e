-- rfm__loyal: RFM quintiles of buyers (last order, orders and revenue in 365 days), first matching tier.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), orders AS (
  SELECT user_id,
    max(occurred_at) AS last_order_at,
    count(*) FILTER (WHERE occurred_at > {as_of} - INTERVAL 365 DAY) AS orders_365d,
    sum(amount::DECIMAL(38, 6)) FILTER (WHERE occurred_at > {as_of} - INTERVAL 365 DAY)::DOUBLE AS revenue_365d
  FROM raw.events
  WHERE event_name = 'purchase' AND occurred_at <= {as_of}
  GROUP BY user_id
), per_user AS (
  SELECT u.user_id, o.last_order_at,
    coalesce(o.orders_365d, 0) AS orders_365d, coalesce(o.revenue_365d, 0) AS revenue_365d
  FROM universe u LEFT JOIN orders o ON o.user_id = u.user_id
), scored AS (
  -- quintiles over every user of the universe (recency: over buyers only)
  SELECT *,
    least(5, 1 + floor(percent_rank() OVER (ORDER BY orders_365d) * 5)) AS frequency_score,
    least(5, 1 + floor(percent_rank() OVER (ORDER BY revenue_365d) * 5)) AS monetary_score
  FROM per_user
), rfm AS (
  SELECT *, least(5, 1 + floor(percent_rank() OVER (ORDER BY last_order_at) * 5)) AS recency_score
  FROM scored WHERE last_order_at IS NOT NULL
), tiers AS (
  SELECT user_id,
    CASE
      WHEN recency_score >= 4 AND frequency_score = 5 AND monetary_score = 5 THEN 'champions'
      WHEN recency_score >= 3 AND orders_365d >= 2 THEN 'loyal'
      WHEN recency_score >= 4 THEN 'new_customers'
      WHEN recency_score <= 2 AND orders_365d >= 2 THEN 'at_risk'
      ELSE 'hibernating'
    END AS tier
  FROM rfm
)
SELECT user_id FROM tiers WHERE tier = 'loyal'
