-- vip_upload: users whose id is on the sales team's list (trimmed).
SELECT user_id
FROM raw.users
WHERE (created_at IS NULL OR created_at <= {as_of})
  AND user_id IN (
    SELECT trim(user_id) FROM read_csv('{uploads}/vip_list.csv', header = true, all_varchar = true)
    WHERE trim(user_id) <> ''
  )
