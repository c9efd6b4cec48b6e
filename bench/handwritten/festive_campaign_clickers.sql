-- festive_campaign_clickers: clicked a festive_sale link in 30 days, opted in to email.
SELECT u.user_id
FROM raw.users u
WHERE (u.created_at IS NULL OR u.created_at <= {as_of}) AND u.email_opt_in
  AND u.user_id IN (
    SELECT user_id FROM raw.events
    WHERE event_name = 'link_click' AND utm_campaign = 'festive_sale'
      AND occurred_at > {as_of} - INTERVAL 30 DAY AND occurred_at <= {as_of}
  )
