-- Distinct mapping inputs ("shapes") of ALL events in a window, with counts: the input of `miner coverage`.
-- Purpose: each distinct (event source, event name, event type, request parameters, resources, account, region,
--   partition) is mapped to IAM actions once by miner.mapping.coverage(), then weighted by `events`; outcome and
--   principal_type are kept so the summary can single out authorised, non-service API calls.
-- Params:
--   $since, $until    TIMESTAMPTZ, the half-open window [since, until); pruned on the hive `date` partition too.
-- Columns: event_source, event_name, event_type, request_parameters, resources, account_id, aws_region, partition,
--   outcome (success/denied/not_found/throttled/dry_run/error), principal_type, events (count),
--   first_seen, last_seen (TIMESTAMPTZ).
-- Order: total (busiest first per event, then every grouping column), so DuckDB and Spark return the same rows.
SELECT
    event_source,
    event_name,
    event_type,
    request_parameters,
    resources,
    account_id,
    aws_region,
    partition,
    outcome,
    principal_type,
    count(*)          AS events,
    min(event_time)   AS first_seen,
    max(event_time)   AS last_seen
FROM events
WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
  AND event_time >= $since AND event_time < $until
GROUP BY event_source, event_name, event_type, request_parameters, resources, account_id, aws_region, partition, outcome,
    principal_type
ORDER BY event_source, event_name, events DESC, event_type, request_parameters, resources, account_id, aws_region,
    partition, outcome, principal_type
