-- vip_upload: users whose email is on the sales team's list (trimmed, case-insensitive).
SELECT user_id
FROM raw.users
WHERE (created_at IS NULL OR created_at <= {as_of})
  AND lower(trim(email)) IN (
    SELECT lower(trim(email)) FROM read_csv('{uploads}/vip_list.csv', header = true, all_varchar = true)
    WHERE trim(email) <> ''
  )
