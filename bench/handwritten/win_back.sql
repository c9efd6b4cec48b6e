-- win_back: bought before, not in the last 90 days; not on the VIP list (vip_upload's query).
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.event_name = 'purchase' AND e.occurred_at <= {as_of}
  AND e.user_id NOT IN (
    SELECT user_id FROM raw.users
    WHERE user_id IN (
      SELECT trim(user_id) FROM read_csv('{uploads}/vip_list.csv', header = true, all_varchar = true)
      WHERE trim(user_id) <> ''
    )
  )
GROUP BY e.user_id
HAVING max(e.occurred_at) < {as_of} - INTERVAL 90 DAY
