-- Where ONE principal's calls came from in a window: source IP (or service host) and user agent, busiest first.
-- Params:
--   $since, $until    TIMESTAMPTZ, the half-open window [since, until); pruned on the hive `date` partition too.
--   $principal_arn    VARCHAR, the principal.
--   $limit            INTEGER, how many rows to return.
-- Columns: source_ip, user_agent, events, first_seen, last_seen.
SELECT
    source_ip,
    user_agent,
    count(*)          AS events,
    min(event_time)   AS first_seen,
    max(event_time)   AS last_seen
FROM events
WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
  AND event_time >= $since AND event_time < $until
  AND principal_arn = $principal_arn
GROUP BY source_ip, user_agent
ORDER BY events DESC, source_ip, user_agent
LIMIT $limit
