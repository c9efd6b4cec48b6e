-- support_follow_up: two or more chats started in the last 7 days.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.event_name = 'chat_started' AND e.occurred_at > {as_of} - INTERVAL 7 DAY AND e.occurred_at <= {as_of}
GROUP BY e.user_id
HAVING count(*) >= 2
