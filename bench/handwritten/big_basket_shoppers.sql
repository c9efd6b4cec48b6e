-- big_basket_shoppers: two or more carts in 60 days, averaging 2,500 or more.
WITH universe AS (
  SELECT user_id FROM raw.users WHERE created_at IS NULL OR created_at <= {as_of}
)
SELECT e.user_id
FROM raw.events e JOIN universe u ON u.user_id = e.user_id
WHERE e.event_name = 'cart_add' AND e.occurred_at > {as_of} - INTERVAL 60 DAY AND e.occurred_at <= {as_of}
GROUP BY e.user_id
HAVING count(*) >= 2 AND avg(e.amount) >= 2500
