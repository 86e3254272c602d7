-- Re-aggregates mapped call shapes by (principal, action, resource, outcome class): each principal's usage in IAM
-- terms (one principal for `miner suggest`, every principal at once for `miner review`).
-- Input: NOT the store. miner.usage.aggregate registers a relation named `mapped`: the rows of
--   usage_by_principal.sql joined with the event -> action mapping (one row per call shape x mapped action),
--   i.e. columns principal_arn (never null), action, resource, events, first_seen, last_seen, aws_region,
--   account_id, event_source, event_name, outcome, event_category, derivation, reason, implicit, invoked_by, status,
--   condition_key, condition_value (a condition the grant may carry: extras.csv), and the arrays source_ips,
--   vpc_endpoints, invokers.
-- Params: none.
-- Columns: principal_arn, action, resource, outcome_class (authorised or denied), calls, first_seen, last_seen, and
--   comma-joined sorted lists regions, accounts, operations (source-prefix:eventName), event_sources, outcomes
--   (success:12,not_found:1), derivation; reason (one, for `*` resources), implicit (every call implied the action,
--   e.g. iam:PassRole), invoked_by, data_event (some calls were logged as data events), conditions (sorted
--   key=value pairs the grant may carry, e.g. ec2:CreateAction=RunInstances; null when some call carried none);
--   source_ips, vpc_endpoints, invokers: the distinct values of the shapes' arrays (sorted, a null element kept:
--   some calls had none; an absent array is null), the request context of miner.diff's Condition evaluation.
-- Portable (the same rows on DuckDB and Spark): every group is aggregated once and joined to its outcomes and context;
--   arrays gather a NULL as chr(0) and turn it back into a NULL element, sorted with NULLs last (Spark's
--   collect_list drops NULLs); an empty FILTER gives NULL on both engines.
WITH rows AS (
    SELECT
        *,
        coalesce(resource, '*')                                                   AS res,
        CASE WHEN outcome = 'denied' THEN 'denied' ELSE 'authorised' END          AS outcome_class,
        split_part(event_source, '.', 1) || ':' || event_name                     AS operation,
        coalesce(outcome, 'success')                                              AS outcome_n,
        CAST(condition_key AS VARCHAR) || '=' || CAST(condition_value AS VARCHAR) AS cond
    FROM mapped
    WHERE status = 'mapped' AND action IS NOT NULL
),
by_outcome AS (
    SELECT principal_arn, action, res, outcome_class,
           array_to_string(list_sort(list(outcome_n || ':' || CAST(n AS VARCHAR))), ',') AS outcomes
    FROM (SELECT principal_arn, action, res, outcome_class, outcome_n, sum(events) AS n FROM rows
          GROUP BY principal_arn, action, res, outcome_class, outcome_n) AS per_outcome
    GROUP BY principal_arn, action, res, outcome_class
),
context_values AS (
    SELECT principal_arn, action, res, outcome_class, 'ip' AS k, v
    FROM rows CROSS JOIN UNNEST(CAST(rows.source_ips AS VARCHAR[])) AS u(v)
    UNION ALL
    SELECT principal_arn, action, res, outcome_class, 'vpce' AS k, v
    FROM rows CROSS JOIN UNNEST(CAST(rows.vpc_endpoints AS VARCHAR[])) AS u(v)
    UNION ALL
    SELECT principal_arn, action, res, outcome_class, 'via' AS k, v
    FROM rows CROSS JOIN UNNEST(CAST(rows.invokers AS VARCHAR[])) AS u(v)
),
context AS (
    SELECT principal_arn, action, res, outcome_class,
           CASE WHEN count(*) FILTER (WHERE k = 'ip') > 0 THEN
               list_sort(list_transform(list(coalesce(v, chr(0))) FILTER (WHERE k = 'ip'),
                                        lambda x: nullif(x, chr(0)))) END   AS source_ips,
           CASE WHEN count(*) FILTER (WHERE k = 'vpce') > 0 THEN
               list_sort(list_transform(list(coalesce(v, chr(0))) FILTER (WHERE k = 'vpce'),
                                        lambda x: nullif(x, chr(0)))) END   AS vpc_endpoints,
           CASE WHEN count(*) FILTER (WHERE k = 'via') > 0 THEN
               list_sort(list_transform(list(coalesce(v, chr(0))) FILTER (WHERE k = 'via'),
                                        lambda x: nullif(x, chr(0)))) END   AS invokers
    FROM (SELECT DISTINCT principal_arn, action, res, outcome_class, k, v FROM context_values) AS distinct_values
    GROUP BY principal_arn, action, res, outcome_class
),
per_key AS (
    SELECT
        principal_arn,
        action,
        res,
        outcome_class,
        CAST(sum(events) AS BIGINT)                                        AS calls,
        min(first_seen)                                                    AS first_seen,
        max(last_seen)                                                     AS last_seen,
        array_to_string(list_sort(list_distinct(list(aws_region))), ',')   AS regions,
        array_to_string(list_sort(list_distinct(list(account_id))), ',')   AS accounts,
        array_to_string(list_sort(list_distinct(list(operation))), ',')    AS operations,
        array_to_string(list_sort(list_distinct(list(event_source))), ',') AS event_sources,
        array_to_string(list_sort(list_distinct(list(derivation))), ',')   AS derivation,
        min(reason)                                                        AS reason,
        bool_and(coalesce(implicit, false))                                AS implicit,
        nullif(array_to_string(list_sort(list_distinct(list(invoked_by))), ','), '') AS invoked_by,
        bool_or(coalesce(event_category = 'Data', false))                  AS data_event,
        CASE WHEN bool_or(cond IS NULL) THEN NULL
             ELSE array_to_string(list_sort(list_distinct(list(cond))), ',') END AS conditions
    FROM rows
    GROUP BY principal_arn, action, res, outcome_class
)
SELECT
    a.principal_arn,
    a.action,
    a.res                                                                  AS resource,
    a.outcome_class,
    a.calls,
    a.first_seen,
    a.last_seen,
    a.regions,
    a.accounts,
    a.operations,
    a.event_sources,
    o.outcomes,
    a.derivation,
    a.reason,
    a.implicit,
    a.invoked_by,
    a.data_event,
    a.conditions,
    c.source_ips,
    c.vpc_endpoints,
    c.invokers
FROM per_key a
JOIN by_outcome o ON o.principal_arn = a.principal_arn AND o.action = a.action AND o.res = a.res
    AND o.outcome_class = a.outcome_class
LEFT JOIN context c ON c.principal_arn = a.principal_arn AND c.action = a.action AND c.res = a.res
    AND c.outcome_class = a.outcome_class
ORDER BY a.principal_arn, a.outcome_class, a.action, a.res
