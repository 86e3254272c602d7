-- The principals that acted in a window: who they are, how much they did, when, and which services they used.
-- Params:
--   $since, $until    TIMESTAMPTZ, the half-open window [since, until); pruned on the hive `date` partition too.
--   $principal_name   VARCHAR or NULL: only principals with this principal_name (NULL = all).
--   $principal_arn    VARCHAR or NULL: only this principal (NULL = all).
-- Columns: principal_arn, principal_type, principal_name, principal_account, events, authorised (events whose
--   outcome is not `denied`), denied, first_seen, last_seen (TIMESTAMPTZ), services (sorted list of eventSource
--   prefixes, e.g. [s3, sts]), accounts (sorted list of recipient accounts), regions (sorted list).
-- Portable lists: a NULL value is gathered as chr(0) and turned back into a NULL element (Spark's collect_list drops
--   NULLs, DuckDB's list keeps them), then sorted (NULLs last on both engines).
SELECT
    principal_arn,
    min(principal_type)                                             AS principal_type,
    min(principal_name)                                             AS principal_name,
    min(principal_account)                                          AS principal_account,
    count(*)                                                        AS events,
    count(*) FILTER (WHERE outcome IS DISTINCT FROM 'denied')       AS authorised,
    count(*) FILTER (WHERE outcome = 'denied')                      AS denied,
    min(event_time)                                                 AS first_seen,
    max(event_time)                                                 AS last_seen,
    list_sort(list_transform(list(DISTINCT coalesce(split_part(event_source, '.', 1), chr(0))),
                             lambda v: nullif(v, chr(0))))          AS services,
    list_sort(list_transform(list(DISTINCT coalesce(account_id, chr(0))),
                             lambda v: nullif(v, chr(0))))          AS accounts,
    list_sort(list_transform(list(DISTINCT coalesce(aws_region, chr(0))),
                             lambda v: nullif(v, chr(0))))          AS regions
FROM events
WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
  AND event_time >= $since AND event_time < $until
  AND principal_arn IS NOT NULL
  AND ($principal_name IS NULL OR principal_name = $principal_name)
  AND ($principal_arn IS NULL OR principal_arn = $principal_arn)
GROUP BY principal_arn
ORDER BY events DESC, principal_arn
