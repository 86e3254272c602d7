-- Denied calls in a window (outcome `denied`: AccessDenied, UnauthorizedOperation, ...): what principals tried
-- and could not do. Never part of a suggested policy; reported beside it.
-- Params:
--   $since, $until    TIMESTAMPTZ, the half-open window [since, until); pruned on the hive `date` partition too.
--   $principal_arn    VARCHAR or NULL: one principal (NULL = every principal).
-- Columns: principal_arn, event_source, event_name, error_code, request_parameters, resources, account_id,
--   aws_region, partition, event_type, events, first_seen, last_seen, error_message (one example).
-- Order: total (every grouping column), so the example message miner.usage.denied_calls keeps is stable.
SELECT
    principal_arn,
    event_source,
    event_name,
    error_code,
    request_parameters,
    resources,
    account_id,
    aws_region,
    partition,
    event_type,
    count(*)                AS events,
    min(event_time)         AS first_seen,
    max(event_time)         AS last_seen,
    min(error_message)      AS error_message
FROM events
WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
  AND event_time >= $since AND event_time < $until
  AND outcome = 'denied'
  AND ($principal_arn IS NULL OR principal_arn = $principal_arn)
GROUP BY principal_arn, event_source, event_name, error_code, request_parameters, resources, account_id, aws_region,
    partition, event_type
ORDER BY principal_arn, event_source, event_name, error_code, events DESC, request_parameters, resources, account_id,
    aws_region, partition, event_type
