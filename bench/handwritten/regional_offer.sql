-- regional_offer: Mumbai, Pune, Nagpur.
SELECT user_id
FROM raw.users
WHERE (created_at IS NULL OR created_at <= {as_of}) AND city IN ('Mumbai', 'Pune', 'Nagpur')
