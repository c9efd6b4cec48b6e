-- whatsapp_reactivation: opted in to WhatsApp, fewer than 2 message reads in 30 days
-- (the low and inactive engagement tiers), and a page view or login in 30 days.
WITH universe AS (
  SELECT * FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
), recent AS (
  SELECT user_id,
    count(*) FILTER (WHERE event_name = 'message_read') AS reads_30d,
    count(*) FILTER (WHERE event_name IN ('page_view', 'login')) AS visits_30d
  FROM raw.events
  WHERE event_name IN ('message_read', 'page_view', 'login')
    AND occurred_at > {as_of} - INTERVAL 30 DAY AND occurred_at <= {as_of}
  GROUP BY user_id
)
SELECT u.user_id
FROM universe u JOIN recent r ON r.user_id = u.user_id
WHERE u.whatsapp_opt_in AND r.reads_30d < 2 AND r.visits_30d > 0
