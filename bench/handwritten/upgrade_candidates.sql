-- upgrade_candidates: free plan, and a lifetime value of 10,000+ or 5,000+ spent in 365 days.
WITH universe AS (
  SELECT * FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), spend AS (
  SELECT user_id, sum(amount::DECIMAL(38, 6))::DOUBLE AS spent_365d
  FROM raw.events
  WHERE event_name = 'purchase' AND occurred_at > {as_of} - INTERVAL 365 DAY AND occurred_at <= {as_of}
  GROUP BY user_id
)
SELECT u.user_id
FROM universe u LEFT JOIN spend s ON s.user_id = u.user_id
WHERE u.plan = 'free' AND (u.lifetime_value >= 10000 OR s.spent_365d >= 5000)
