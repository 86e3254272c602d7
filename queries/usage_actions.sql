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
           array_agg(v ORDER BY v) FILTER (WHERE k = 'ip')   AS source_ips,
           array_agg(v ORDER BY v) FILTER (WHERE k = 'vpce') AS vpc_endpoints,
           array_agg(v ORDER BY v) FILTER (WHERE k = 'via')  AS invokers
    FROM (SELECT DISTINCT principal_arn, action, res, outcome_class, k, v FROM context_values) AS distinct_values
    GROUP BY principal_arn, action, res, outcome_class
)
SELECT
    r.principal_arn,
    r.action,
    r.res                                                                  AS resource,
    r.outcome_class,
    CAST(sum(r.events) AS BIGINT)                                          AS calls,
    min(r.first_seen)                                                      AS first_seen,
    max(r.last_seen)                                                       AS last_seen,
    array_to_string(list_sort(list_distinct(list(r.aws_region))), ',')     AS regions,
    array_to_string(list_sort(list_distinct(list(r.account_id))), ',')     AS accounts,
    array_to_string(list_sort(list_distinct(list(r.operation))), ',')      AS operations,
    array_to_string(list_sort(list_distinct(list(r.event_source))), ',')   AS event_sources,
    any_value(o.outcomes)                                                  AS outcomes,
    array_to_string(list_sort(list_distinct(list(r.derivation))), ',')     AS derivation,
    min(r.reason)                                                          AS reason,
    bool_and(coalesce(r.implicit, false))                                  AS implicit,
    nullif(array_to_string(list_sort(list_distinct(list(r.invoked_by))), ','), '') AS invoked_by,
    bool_or(coalesce(r.event_category = 'Data', false))                    AS data_event,
    CASE WHEN bool_or(r.cond IS NULL) THEN NULL
         ELSE array_to_string(list_sort(list_distinct(list(r.cond))), ',') END AS conditions,
    any_value(c.source_ips)                                                AS source_ips,
    any_value(c.vpc_endpoints)                                             AS vpc_endpoints,
    any_value(c.invokers)                                                  AS invokers
FROM rows r
JOIN by_outcome o USING (principal_arn, action, res, outcome_class)
LEFT JOIN context c USING (principal_arn, action, res, outcome_class)
GROUP BY r.principal_arn, r.action, r.res, r.outcome_class
ORDER BY r.principal_arn, r.outcome_class, r.action, r.res
