-- Find principals by name or ARN, cheaply: resolves `--role NAME` / `--user NAME` / `--principal ARN` before the
-- usage query. Reads only identity columns and prunes on the hive `date` partition (whole days of the window).
-- Params:
--   $since, $until    TIMESTAMPTZ, the window; only the days it touches are read (no event_time filter here).
--   $principal_name   VARCHAR or NULL: match principal_name exactly (NULL = do not filter on it).
--   $principal_arn    VARCHAR or NULL: match principal_arn exactly (NULL = do not filter on it).
-- Columns: principal_arn, principal_type, principal_name, principal_account, events (in the days read).
SELECT
    principal_arn,
    min(principal_type)           AS principal_type,
    min(principal_name)           AS principal_name,
    min(principal_account)        AS principal_account,
    count(*)                      AS events
FROM events
WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
  AND principal_arn IS NOT NULL
  AND ($principal_name IS NULL OR principal_name = $principal_name)
  AND ($principal_arn IS NULL OR principal_arn = $principal_arn)
GROUP BY principal_arn
ORDER BY principal_arn
