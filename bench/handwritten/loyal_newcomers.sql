-- loyal_newcomers: returning visitors first seen in the last 120 days, neither top spenders
-- nor in win_back (the queries of returning_visitors, top_spenders and win_back, inlined).
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), views AS (
  SELECT user_id,
    min(occurred_at) AS first_view_at,
    count(DISTINCT occurred_at::DATE) FILTER (WHERE occurred_at > {as_of} - INTERVAL 30 DAY) AS days_30d
  FROM raw.events
  WHERE event_name = 'page_view' AND occurred_at <= {as_of}
  GROUP BY user_id
), top_spenders AS (
  SELECT user_id FROM (
    SELECT u.user_id, o.last_order_at, coalesce(o.revenue_365d, 0) AS revenue_365d,
      least(5, 1 + floor(percent_rank() OVER (ORDER BY coalesce(o.revenue_365d, 0)) * 5)) AS monetary_score
    FROM universe u LEFT JOIN (
      SELECT user_id, max(occurred_at) AS last_order_at,
        sum(amount::DECIMAL(38, 6)) FILTER (WHERE occurred_at > {as_of} - INTERVAL 365 DAY)::DOUBLE AS revenue_365d
      FROM raw.events
      WHERE event_name = 'purchase' AND occurred_at <= {as_of}
      GROUP BY user_id
    ) o ON o.user_id = u.user_id
  )
  WHERE monetary_score = 5 AND revenue_365d >= 5000
    AND last_order_at > {as_of} - INTERVAL 90 DAY AND last_order_at <= {as_of}
), win_back AS (
  SELECT user_id
  FROM raw.events
  WHERE event_name = 'purchase' AND occurred_at <= {as_of}
    AND user_id NOT IN (
      SELECT user_id FROM raw.users
      WHERE user_id IN (
        SELECT trim(user_id) FROM read_csv('{uploads}/vip_list.csv', header = true, all_varchar = true)
        WHERE trim(user_id) <> ''
      )
    )
  GROUP BY user_id
  HAVING max(occurred_at) < {as_of} - INTERVAL 90 DAY
)
SELECT v.user_id
FROM views v JOIN universe u ON u.user_id = v.user_id
WHERE v.days_30d >= 2 AND v.first_view_at > {as_of} - INTERVAL 120 DAY
  AND v.user_id NOT IN (SELECT user_id FROM top_spenders)
  AND v.user_id NOT IN (SELECT user_id FROM win_back)
