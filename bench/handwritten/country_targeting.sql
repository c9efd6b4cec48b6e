-- country_targeting: India, Hindi.
SELECT user_id
FROM raw.users
WHERE (created_at IS NULL OR created_at <= {as_of}) AND country = 'IN' AND language = 'hi'
