-- welcome_journey: signed up in the last 7 days (the signup event, or signup_at).
SELECT u.user_id
FROM raw.users u
WHERE (u.created_at IS NULL OR u.created_at <= {as_of})
  AND (
    (u.signup_at > {as_of} - INTERVAL 7 DAY AND u.signup_at <= {as_of})
    OR u.user_id IN (
      SELECT user_id FROM raw.events
      WHERE event_name = 'signup' AND occurred_at > {as_of} - INTERVAL 7 DAY AND occurred_at <= {as_of}
    )
  )
