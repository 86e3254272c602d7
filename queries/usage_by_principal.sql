-- Usage of one principal, or of every principal, in a window: one row per distinct call shape of each principal (the
-- input of the event -> action mapping).
-- Purpose: what principals did, grouped so that each distinct (principal, event, parameters, resources, outcome) is
--   mapped once; miner.usage maps the shapes to IAM actions and re-aggregates by (principal, action, resource).
--   `miner suggest` reads one principal's rows (pruned on principal_arn); `miner review` reads every principal's
--   in one pass.
-- Params:
--   $since, $until    TIMESTAMPTZ, the half-open window [since, until); pruned on the hive `date` partition too.
--   $principal_arn    VARCHAR or NULL: one principal (events.principal_arn, e.g. the role ARN with its path);
--                     NULL = every principal.
-- Columns: principal_arn, event_source, event_name, request_parameters, resources, account_id, aws_region, partition,
--   event_type, outcome, error_code (null for calls without one), event_category (Management/Data/...), events
--   (count), first_seen, last_seen (TIMESTAMPTZ), invoked_by (one service that called on the principal's behalf, or
--   null); and the request context that policy Conditions are evaluated against, as arrays with one element per
--   distinct (source_ip, vpc_endpoint_id, invoked_by) of the shape, so a value may repeat: source_ips
--   (sourceIPAddress of the calls NOT made through a VPC endpoint; null when every call was), vpc_endpoints
--   (vpcEndpointId, null for calls without one), invokers (invokedBy, null for calls the principal made itself).
--   Ordered by every grouping column, principal first.
-- The context is grouped first and gathered without DISTINCT: DISTINCT array aggregates doubled the query's time.
-- Portable arrays (the same on DuckDB and Spark): sorted, NULLs last; a NULL value is gathered as chr(0) and turned
--   back into a NULL element (Spark's collect_list drops NULLs, DuckDB's list keeps them); an empty FILTER gives
--   NULL on both (Spark would give an empty array).
WITH calls AS (
    SELECT
        principal_arn, event_source, event_name, request_parameters, resources, account_id, aws_region, partition,
        event_type, outcome, error_code, event_category, source_ip, vpc_endpoint_id, invoked_by,
        count(*)          AS events,
        min(event_time)   AS first_seen,
        max(event_time)   AS last_seen
    FROM events
    WHERE date BETWEEN CAST($since AS DATE) AND CAST($until AS DATE)
      AND event_time >= $since AND event_time < $until
      AND principal_arn IS NOT NULL
      AND ($principal_arn IS NULL OR principal_arn = $principal_arn)
    GROUP BY principal_arn, event_source, event_name, request_parameters, resources, account_id, aws_region, partition,
        event_type, outcome, error_code, event_category, source_ip, vpc_endpoint_id, invoked_by
)
SELECT
    principal_arn,
    event_source,
    event_name,
    request_parameters,
    resources,
    account_id,
    aws_region,
    partition,
    event_type,
    outcome,
    error_code,
    event_category,
    CAST(sum(events) AS BIGINT)                                    AS events,
    min(first_seen)                                                AS first_seen,
    max(last_seen)                                                 AS last_seen,
    max(invoked_by)                                                AS invoked_by,
    CASE WHEN count(*) FILTER (WHERE vpc_endpoint_id IS NULL) > 0 THEN
        list_sort(list_transform(list(coalesce(source_ip, chr(0))) FILTER (WHERE vpc_endpoint_id IS NULL),
                                 lambda v: nullif(v, chr(0)))) END  AS source_ips,
    list_sort(list_transform(list(coalesce(vpc_endpoint_id, chr(0))), lambda v: nullif(v, chr(0))))
                                                                   AS vpc_endpoints,
    list_sort(list_transform(list(coalesce(invoked_by, chr(0))), lambda v: nullif(v, chr(0))))
                                                                   AS invokers
FROM calls
GROUP BY principal_arn, event_source, event_name, request_parameters, resources, account_id, aws_region, partition,
    event_type, outcome, error_code, event_category
ORDER BY principal_arn, event_source, event_name, request_parameters, resources, account_id, aws_region, outcome,
    error_code, partition, event_type, event_category
