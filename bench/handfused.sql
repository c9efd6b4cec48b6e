-- Every bench segment (bench/specs, 30 segments) in one query, as an analytics engineer
-- who knows DuckDB would write it by hand: one pass over the events computing every
-- per-user measure with FILTER aggregates (shared predicates: each event is read once,
-- every window is a filter on it), plus two narrow scans where an aggregate cannot say
-- it: the distinct (user, day) pairs of page views in 30 days (active_days, without
-- COUNT(DISTINCT)), and the link clicks of the last 14 days (campaign_responders'
-- "followed by a click within 10 minutes" of the latest read). Joined to the users once;
-- one row (segment_name, user_id) per member, holdout users included (as in the build's
-- segment_membership). The logic is that of bench/handwritten/*.sql, fused.
WITH users AS (
  SELECT user_id, country, language, city, plan, lifetime_value, signup_at,
    coalesce(email_opt_in, false) AS email_opt_in,
    coalesce(whatsapp_opt_in, false) AS whatsapp_opt_in,
    coalesce(user_id IN (
      SELECT trim(user_id) FROM read_csv('{uploads}/vip_list.csv', header = true, all_varchar = true)
      WHERE trim(user_id) <> ''
    ), false) AS vip_listed
  FROM raw.users
  WHERE created_at IS NULL OR created_at <= {as_of}
), measures AS (
  -- the one pass: every measure of every segment and trait
  SELECT user_id,
    max(occurred_at) FILTER (WHERE event_name = 'cart_add' AND occurred_at > {as_of} - INTERVAL 48 HOUR) AS last_cart_48h,
    count(*) FILTER (WHERE event_name = 'cart_add' AND occurred_at > {as_of} - INTERVAL 60 DAY) AS carts_60d,
    avg(amount) FILTER (WHERE event_name = 'cart_add' AND occurred_at > {as_of} - INTERVAL 60 DAY) AS cart_avg_60d,
    max(occurred_at) FILTER (WHERE event_name = 'message_read' AND utm_campaign IS NOT NULL
                               AND occurred_at > {as_of} - INTERVAL 14 DAY) AS last_campaign_read_14d,
    count(*) FILTER (WHERE event_name = 'message_read' AND occurred_at > {as_of} - INTERVAL 30 DAY) AS reads_30d,
    count(*) FILTER (WHERE event_name = 'message_read' AND occurred_at > {as_of} - INTERVAL 90 DAY) AS reads_90d,
    count(*) FILTER (WHERE event_name = 'link_click' AND utm_campaign = 'festive_sale'
                       AND occurred_at > {as_of} - INTERVAL 30 DAY) AS festive_clicks_30d,
    count(*) FILTER (WHERE event_name = 'page_view' AND starts_with(path, '/pricing')
                       AND occurred_at > {as_of} - INTERVAL 30 DAY) AS pricing_prefix_views_30d,
    count(*) FILTER (WHERE event_name = 'page_view' AND path = '/pricing'
                       AND occurred_at > {as_of} - INTERVAL 14 DAY) AS pricing_views_14d,
    count(*) FILTER (WHERE event_name = 'page_view' AND referrer ILIKE '%partner%'
                       AND occurred_at > {as_of} - INTERVAL 90 DAY) AS partner_views_90d,
    count(*) FILTER (WHERE event_name IN ('page_view', 'login') AND occurred_at > {as_of} - INTERVAL 30 DAY) AS visits_30d,
    min(occurred_at) FILTER (WHERE event_name = 'page_view') AS first_view_at,
    count(*) FILTER (WHERE event_name = 'demo_request') AS demo_requests,
    max(occurred_at) FILTER (WHERE event_name = 'message_reply') AS last_reply_at,
    max(amount) FILTER (WHERE event_name = 'purchase' AND occurred_at > {as_of} - INTERVAL 180 DAY) AS max_order_180d,
    min(amount) FILTER (WHERE event_name = 'purchase' AND occurred_at > {as_of} - INTERVAL 180 DAY) AS min_order_180d,
    max(occurred_at) FILTER (WHERE event_name = 'purchase') AS last_order_at,
    count(*) FILTER (WHERE event_name = 'purchase' AND occurred_at > {as_of} - INTERVAL 365 DAY) AS orders_365d,
    sum(amount::DECIMAL(38, 6)) FILTER (WHERE event_name = 'purchase' AND occurred_at > {as_of} - INTERVAL 365 DAY)::DOUBLE AS revenue_365d,
    count(*) FILTER (WHERE event_name = 'chat_started' AND occurred_at > {as_of} - INTERVAL 7 DAY) AS chats_7d,
    count(*) FILTER (WHERE event_name = 'signup' AND occurred_at > {as_of} - INTERVAL 7 DAY) AS signups_7d
  FROM raw.events
  WHERE occurred_at <= {as_of}
  GROUP BY user_id
), view_days AS (
  -- active_days of page views in 30 days: the distinct (user, day) pairs, then a count
  SELECT user_id, count(*) AS view_days_30d
  FROM (
    SELECT DISTINCT user_id, occurred_at::DATE AS day
    FROM raw.events
    WHERE event_name = 'page_view' AND occurred_at > {as_of} - INTERVAL 30 DAY AND occurred_at <= {as_of}
  )
  GROUP BY user_id
), responded AS (
  -- a link click within 10 minutes after the latest campaign read of the last 14 days
  SELECT DISTINCT m.user_id
  FROM measures m JOIN raw.events c ON c.user_id = m.user_id
  WHERE m.last_campaign_read_14d IS NOT NULL
    AND c.event_name = 'link_click' AND c.occurred_at > {as_of} - INTERVAL 14 DAY AND c.occurred_at <= {as_of}
    AND c.occurred_at > m.last_campaign_read_14d AND c.occurred_at <= m.last_campaign_read_14d + INTERVAL 10 MINUTE
), per_user AS (
  SELECT u.*, m.* EXCLUDE (user_id, reads_30d, reads_90d, orders_365d, revenue_365d),
    coalesce(m.reads_30d, 0) AS reads_30d, coalesce(m.reads_90d, 0) AS reads_90d,
    coalesce(m.orders_365d, 0) AS orders_365d, coalesce(m.revenue_365d, 0) AS revenue_365d,
    m.revenue_365d AS spent_365d,
    coalesce(d.view_days_30d, 0) AS view_days_30d,
    r.user_id IS NOT NULL AS responded,
    -- the traits' quintiles (SPEC 1.5) over every user of the universe
    least(5, 1 + floor(percent_rank() OVER (ORDER BY coalesce(m.orders_365d, 0)) * 5)) AS frequency_score,
    least(5, 1 + floor(percent_rank() OVER (ORDER BY coalesce(m.revenue_365d, 0)) * 5)) AS monetary_score
  FROM users u
    LEFT JOIN measures m ON m.user_id = u.user_id
    LEFT JOIN view_days d ON d.user_id = u.user_id
    LEFT JOIN responded r ON r.user_id = u.user_id
), scored AS (
  -- recency ranks the buyers only (users who never bought have no recency score)
  SELECT *,
    CASE WHEN last_order_at IS NOT NULL THEN
      least(5, 1 + floor(percent_rank() OVER (PARTITION BY last_order_at IS NOT NULL ORDER BY last_order_at) * 5))
    END AS recency_score
  FROM per_user
), flags AS (
  SELECT *,
    monetary_score = 5 AND revenue_365d >= 5000
      AND last_order_at > {as_of} - INTERVAL 90 DAY AS is_top_spender,
    last_order_at < {as_of} - INTERVAL 90 DAY AND NOT vip_listed AS is_win_back,
    CASE
      WHEN last_order_at IS NULL THEN NULL
      WHEN recency_score >= 4 AND frequency_score = 5 AND monetary_score = 5 THEN 'rfm__champions'
      WHEN recency_score >= 3 AND orders_365d >= 2 THEN 'rfm__loyal'
      WHEN recency_score >= 4 THEN 'rfm__new_customers'
      WHEN recency_score <= 2 AND orders_365d >= 2 THEN 'rfm__at_risk'
      ELSE 'rfm__hibernating'
    END AS rfm_tier,
    CASE
      WHEN reads_30d >= 8 THEN 'engagement__high'
      WHEN reads_30d >= 2 THEN 'engagement__moderate'
      WHEN reads_90d >= 1 THEN 'engagement__low'
      ELSE 'engagement__inactive'
    END AS engagement_tier
  FROM scored
), memberships AS (
  SELECT user_id, unnest([
    CASE WHEN last_cart_48h IS NOT NULL AND (last_order_at IS NULL OR last_order_at <= last_cart_48h)
      THEN 'abandoned_cart' END,
    CASE WHEN carts_60d >= 2 AND cart_avg_60d >= 2500 THEN 'big_basket_shoppers' END,
    CASE WHEN responded THEN 'campaign_responders' END,
    CASE WHEN country = 'IN' AND language = 'hi' THEN 'country_targeting' END,
    engagement_tier,
    CASE WHEN festive_clicks_30d > 0 AND email_opt_in THEN 'festive_campaign_clickers' END,
    CASE WHEN pricing_prefix_views_30d > 0 AND demo_requests > 0 THEN 'high_intent' END,
    CASE WHEN view_days_30d >= 2 AND first_view_at > {as_of} - INTERVAL 120 DAY
           AND NOT coalesce(is_top_spender, false) AND NOT coalesce(is_win_back, false)
      THEN 'loyal_newcomers' END,
    CASE WHEN view_days_30d = 1 THEN 'new_visitors' END,
    CASE WHEN last_reply_at < {as_of} - INTERVAL 15 DAY THEN 'non_responsive' END,
    CASE WHEN max_order_180d >= 5000 AND min_order_180d >= 500 THEN 'premium_buyers' END,
    CASE WHEN pricing_views_14d >= 2 THEN 'pricing_page_visitors' END,
    CASE WHEN partner_views_90d > 0 THEN 'referral_partner_visitors' END,
    CASE WHEN city IN ('Mumbai', 'Pune', 'Nagpur') THEN 'regional_offer' END,
    CASE WHEN view_days_30d >= 2 THEN 'returning_visitors' END,
    rfm_tier,
    CASE WHEN chats_7d >= 2 THEN 'support_follow_up' END,
    CASE WHEN is_top_spender THEN 'top_spenders' END,
    CASE WHEN plan = 'free' AND (lifetime_value >= 10000 OR spent_365d >= 5000) THEN 'upgrade_candidates' END,
    CASE WHEN vip_listed THEN 'vip_upload' END,
    CASE WHEN (signup_at > {as_of} - INTERVAL 7 DAY AND signup_at <= {as_of}) OR signups_7d > 0
      THEN 'welcome_journey' END,
    CASE WHEN whatsapp_opt_in AND reads_30d < 2 AND visits_30d > 0 THEN 'whatsapp_reactivation' END,
    CASE WHEN is_win_back THEN 'win_back' END
  ]) AS segment_name
  FROM flags
)
SELECT segment_name, user_id FROM memberships WHERE segment_name IS NOT NULL
