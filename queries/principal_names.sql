-- Every principal the store knows, over ALL time (no window): used to resolve `--role NAME` when the window holds
-- no match and to suggest close names for a typo. Scans the identity columns of the whole store (error path only).
-- Params: none.
-- Columns: principal_arn, principal_type, principal_name, principal_account, events, first_seen, last_seen.
SELECT
    principal_arn,
    min(principal_type)           AS principal_type,
    min(principal_name)           AS principal_name,
    min(principal_account)        AS principal_account,
    count(*)                      AS events,
    min(event_time)               AS first_seen,
    max(event_time)               AS last_seen
FROM events
WHERE principal_arn IS NOT NULL
GROUP BY principal_arn
ORDER BY principal_arn
