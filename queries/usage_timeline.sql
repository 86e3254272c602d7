-- Events per day in a window, by principal, service and outcome: activity over time for the notebooks and the
-- review report.
-- Params:
--   $since, $until    TIMESTAMPTZ, the half-open window [since, until); pruned on the hive `date` partition too.
--   $principal_arn    VARCHAR or NULL: one principal (NULL = every principal).
-- Columns: day (DATE, UTC), principal_arn, service (eventSource prefix, e.g. s3), outcome, events.
SELECT
    CAST(event_time AT TIME ZONE 'UTC' AS DATE)   AS day,
    principal_arn,
    split_part(event_source, '.', 1)              AS service,
    outcome,
    count(*)                                      AS events
FROM events
WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
  AND event_time >= $since AND event_time < $until
  AND ($principal_arn IS NULL OR principal_arn = $principal_arn)
GROUP BY CAST(event_time AT TIME ZONE 'UTC' AS DATE), principal_arn, split_part(event_source, '.', 1), outcome
ORDER BY day, principal_arn, service, outcome
