-- referral_partner_visitors: a page view referred by a partner site in the last 90 days.
SELECT u.user_id
FROM raw.users u
WHERE (u.created_at IS NULL OR u.created_at <= {as_of})
  AND u.user_id IN (
    SELECT user_id FROM raw.events
    WHERE event_name = 'page_view' AND referrer ILIKE '%partner%'
      AND occurred_at > {as_of} - INTERVAL 90 DAY AND occurred_at <= {as_of}
  )
