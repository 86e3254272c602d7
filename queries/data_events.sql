-- Which services the trail logged DATA events for in a window (S3 object-level, Lambda Invoke, DynamoDB items,
-- ...). A granted data-event action of a service with no data events here could not have been observed.
-- Params:
--   $since, $until    TIMESTAMPTZ, the half-open window [since, until); pruned on the hive `date` partition too.
--   $account          VARCHAR or NULL: one recipient account (hive `account` partition; NULL = all accounts).
-- Columns: account (the recipient account: the hive partition), event_source, events, principals (distinct
--   principals with such events); one row per account and event source, so that one query serves every account.
SELECT
    account,
    event_source,
    count(*)                        AS events,
    count(DISTINCT principal_arn)   AS principals
FROM events
WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
  AND event_time >= $since AND event_time < $until
  AND ($account IS NULL OR account = $account)
  AND event_category = 'Data'
GROUP BY account, event_source
ORDER BY account, event_source
