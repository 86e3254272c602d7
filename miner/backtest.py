"""Backtests suggested policies: mine on a training window, replay a later test window, count privilege errors."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import pandas as pd

from miner import models
from miner.escape import visible
from miner.patterns import covers, is_literal, regex, tokens

#: A predicate: does this policy (a list of IAM policy documents) allow ``action`` on ``resource``?
Evaluator = Callable[[list[dict], str, str], bool]


@dataclass(frozen=True)
class Setting:
    """One way of mining a policy: the knobs of ``miner suggest`` plus service-level generalisation."""

    name: str
    wildcards: bool = True
    max_resources: int = 10
    service_level: bool = False

    def describe(self) -> str:
        """The setting as the equivalent ``miner suggest`` options (or the service-level rule)."""
        if self.service_level:
            return "every used service as <service>:* on *"
        return f"--max-resources {self.max_resources}" + ("" if self.wildcards else " --no-wildcards")


def default_settings() -> list[Setting]:
    """The settings compared by default: wildcards off/on x max-resources 1/10/50, then service-level.

    Returns:
        The settings, from most to least specific.
    """
    out = []
    for wildcards in (False, True):
        for mr in (50, 10, 1):
            out.append(Setting(f"{'wildcards' if wildcards else 'no-wildcards'}, max-resources {mr}", wildcards, mr))
    out.append(Setting("service-level", True, 1, service_level=True))
    return out


@dataclass
class Score:
    """Privilege errors of one policy on one test window (Sanders and Yue's under-/over-privilege framing)."""

    setting: str
    options: str
    policy_actions: int  # actions the policy grants, expanded through the catalogue
    policy_statements: int
    policy_chars: int
    test_calls: int  # authorised calls in the test window (mapped to IAM actions)
    test_actions: int  # distinct actions they needed
    denied_calls: int  # test calls the policy would deny (under-privilege)
    denied_actions: int  # distinct actions with at least one denied call
    unused_granted: int  # granted actions never used in the test window (over-privilege)
    under_rate: float  # denied_calls / test_calls
    over_rate: float  # unused_granted / policy_actions
    denied_by_action: dict[str, int] = field(default_factory=dict)
    unused_granted_sample: list[str] = field(default_factory=list)
    # resource over-privilege (see resource_scores)
    resource_calls: int = 0  # allowed test calls on a known resource of an action that can be scoped to resources
    unscoped_calls: int = 0  # test calls that cannot be measured: resource "*" (not derived) or action only on "*"
    resource_breadth: float = 0.0  # call-weighted mean breadth of the broadest grant of each call (0 when none measured)
    resource_grants: int = 0  # granted (action, resource pattern) pairs of the used actions that can be scoped
    wildcard_grants: int = 0  # those whose pattern is not one literal ARN
    idle_wildcards: int = 0  # wildcard grants that allowed no test resource beyond the training ones they cover
    idle_rate: float = 0.0  # idle_wildcards / resource_grants
    breadth_by_action: dict[str, float] = field(default_factory=dict)
    # with the attached policies known: of the actions they grant that the training window never used, the share
    # this policy no longer grants (None without attached policies)
    unused_cut: float | None = None
    wildcards: bool = True
    max_resources: int = 10
    service_level: bool = False

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def split_windows(anchor: datetime, train_days: float, test_days: float) -> tuple[models.Window, models.Window]:
    """The training and test windows that end at ``anchor``: ``[a-train-test, a-test)`` and ``[a-test, a)``.

    Args:
        anchor: end of the test window (exclusive).
        train_days: training window length in days.
        test_days: test window length in days.

    Returns:
        (train, test) windows, adjacent and in time order.

    Raises:
        ValueError: when a length is not positive.
    """
    if train_days <= 0 or test_days <= 0:
        raise ValueError("--train and --test must be positive durations (e.g. 60d, 30d)")
    test_start = anchor - timedelta(days=test_days)
    return models.Window(test_start - timedelta(days=train_days), test_start), models.Window(test_start, anchor)


def parse_days(text: str) -> float:
    """A duration such as ``60d``, ``8w``, ``12h`` or ``3m`` (30-day months) in days.

    Args:
        text: the user's text (a bare number means days).

    Returns:
        The length in days.

    Raises:
        ValueError: for anything else.
    """
    t = str(text).strip().lower()
    try:
        days = float(t)
    except ValueError:
        age = models.parse_age(t)
        days = age.total_seconds() / 86400 if age is not None else None
    if days is None or not math.isfinite(days):
        raise ValueError(f"cannot read {text!r} as a duration: use e.g. 60d, 8w, 12h")
    return days


def default_anchor(last_event: datetime) -> datetime:
    """The default end of the test window: the midnight (UTC) after the principal's last event.

    Args:
        last_event: time of the principal's latest event in the store.

    Returns:
        An aware UTC datetime at 00:00.
    """
    t = last_event.astimezone(timezone.utc) if last_event.tzinfo else last_event.replace(tzinfo=timezone.utc)
    return datetime(t.year, t.month, t.day, tzinfo=timezone.utc) + timedelta(days=1)


# ----------------------------------------------------------------------------------------- resource breadth

#: A character no logged name or policy literal holds: it stands in for "any other value" when probing a pattern.
FRESH = "\ue000"
#: The separators between the levels of an ARN (the header fields, then the resource's path and type segments).
LEVEL_SEPARATORS = "/:"


def levels(text: str) -> list[tuple[int, int]]:
    """The levels of a resource text: ``(start, end)`` spans between ``/`` and ``:`` separators, empty ones kept.

    ``arn:aws:s3:::bucket/invoices/a.pdf`` has 8 levels: ``arn``, ``aws``, ``s3``, the empty region and account,
    ``bucket``, ``invoices``, ``a.pdf``.

    Args:
        text: a concrete resource (no wildcards).

    Returns:
        The spans, in order (at least one).
    """
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch in LEVEL_SEPARATORS:
            out.append((start, i))
            start = i + 1
    out.append((start, len(text)))
    return out


def _concrete(resource: str) -> tuple[str, frozenset[int]]:
    """A resource's text with each wildcard or variable the mapping put in it replaced by :data:`FRESH`, and the
    positions of those replacements."""
    toks = tokens(resource)
    return "".join(t if isinstance(t, str) else FRESH for t in toks), \
        frozenset(i for i, t in enumerate(toks) if not isinstance(t, str))


@functools.lru_cache(maxsize=262144)
def breadth(pattern: str, resource: str) -> float:
    """How much of a resource's ARN a granted pattern leaves open: 0 for the exact ARN, 1 for ``*``.

    The resource is cut into :func:`levels`. A level is open (1) when the pattern still matches after the
    level's whole value is replaced by another one; otherwise it counts the share of its characters that can each
    be changed with the pattern still matching. Breadth is the mean over the levels. For
    ``arn:aws:s3:::b/invoices/2026/08/01/x.pdf`` (11 levels): the exact ARN 0, ``b/invoices/*/*/*/*.pdf`` 0.29
    (three levels and ``x`` of ``x.pdf`` open), ``b/invoices/*`` 0.36, ``b/*`` 0.45, ``arn:aws:s3:::*`` 0.55,
    ``*`` 1. Every test asks only whether the pattern matches a string, so a pattern that covers another is at
    least as broad on every resource both match.

    Limits: the measure is relative to the resource (a level with a long name weighs as much as a short one);
    characters are changed one at a time, so a constraint such as "contains an ``a`` somewhere" is not seen;
    policy variables match anything (as in :mod:`miner.diff`). A wildcard the resource itself holds (a secret's
    random suffix ``??????``) is not probed: no grant can be narrower there, so the exact grant scores 0.

    Args:
        pattern: a granted Resource element that covers ``resource``.
        resource: a resource as mapped (an escaped literal ARN, possibly with a wildcard the mapping put there).

    Returns:
        The breadth, in [0, 1].

    Raises:
        ValueError: when ``pattern`` does not match ``resource``.
    """
    text, open_already = _concrete(resource)
    rx = regex(pattern)
    if rx.fullmatch(text) is None:
        raise ValueError(f"{pattern!r} does not grant {resource!r}")
    if is_literal(pattern):
        return 0.0
    spans = levels(text)
    total = 0.0
    for s, e in spans:
        if rx.fullmatch(text[:s] + FRESH + text[e:]) is not None:
            total += 1.0
        else:
            probed = [k for k in range(s, e) if k not in open_already]
            if probed:
                total += sum(rx.fullmatch(text[:k] + FRESH + text[k + 1:]) is not None for k in probed) / len(probed)
    return total / len(spans)


# ----------------------------------------------------------------------------------------- policies


def _statements(doc: dict) -> list[dict]:
    st = doc.get("Statement", [])
    return [st] if isinstance(st, dict) else list(st)


def service_level_policy(actions: Iterable[str]) -> dict:
    """The coarsest useful generalisation: ``<service>:*`` on ``*`` for every service used.

    Args:
        actions: the IAM actions used in training.

    Returns:
        One IAM policy document.
    """
    services = sorted({a.split(":", 1)[0].lower() for a in actions if ":" in a})
    if not services:
        return {"Version": "2012-10-17", "Statement": []}
    return {"Version": "2012-10-17",
            "Statement": [{"Sid": "ServiceLevel", "Effect": "Allow", "Action": [f"{s}:*" for s in services], "Resource": "*"}]}


def _calls_by_resource(frame: pd.DataFrame | None) -> pd.DataFrame:
    """Calls summed per (action, resource), sorted; an empty frame for ``None`` or no rows."""
    if frame is None or not len(frame):
        return pd.DataFrame(columns=["action", "resource", "calls"])
    return frame.groupby(["action", "resource"], as_index=False, sort=True)["calls"].sum()


def _rows(frame: pd.DataFrame | None, *extra: str):
    """The (action, resource, *extra) tuples of a usage frame (none for ``None``)."""
    if frame is None or not len(frame):
        return iter(())
    return frame[["action", "resource", *extra]].itertuples(index=False, name=None)


def resource_scores(docs: list[dict], test_usage: pd.DataFrame, train_usage: pd.DataFrame | None = None,
                    allows: Callable[[str, str], bool] | None = None, catalog=None) -> dict:
    """Resource over-privilege of a policy on a test window: how far its grants reach past the resources used.

    Only calls on a known resource of an action that can be scoped to resources are measured (an action IAM
    grants only on ``*``, or a resource the mapping could not derive, is the same in every policy). The resources
    of an action are the Resource patterns of the Allow statements whose Action matches it (``NotResource``
    counts as ``*``; Deny statements and conditions are not read).

    - ``resource_breadth``: for each allowed test call, the :func:`breadth` of the broadest pattern that grants it
      on its resource, averaged over the calls.
    - ``idle_wildcards``: the wildcard grants, over the actions used in either window, that allowed no test-window
      resource beyond the training resources they cover (an exact grant of the training resources would have
      served the test window as well); ``idle_rate`` divides by every (action, pattern) grant of those actions.

    Args:
        docs: the policy documents.
        test_usage: authorised test-window usage (``action``, ``resource``, ``calls``).
        train_usage: the training usage the policy was mined from (without it, a wildcard grant is idle only when
            it allowed no test resource at all).
        allows: decides whether the policy allows an (action, resource); calls it denies are under-privilege and
            not measured here (default: :class:`miner.diff.Evaluator` over ``docs``).
        catalog: the IAM catalogue (which actions can be scoped to resources; default the pinned one).

    Returns:
        ``resource_calls``, ``unscoped_calls``, ``resource_breadth``, ``resource_grants``, ``wildcard_grants``,
        ``idle_wildcards``, ``idle_rate`` and ``breadth_by_action`` (action -> call-weighted breadth, broadest
        first), as in :class:`Score`.
    """
    from miner import diff

    if catalog is None:
        from miner.catalog import get_catalog

        catalog = get_catalog()
    if allows is None:
        allows = diff.Evaluator(docs)
    allow_stmts = [(st, ("*",) if st.not_resources is not None else st.resources)
                   for d in docs for st in diff.statements(d) if st.effect == "Allow"]
    granted: dict[str, list[str]] = {}
    scoped: dict[str, bool] = {}

    def patterns(action: str) -> list[str]:
        if action not in granted:
            granted[action] = sorted({q for st, qs in allow_stmts if st.matches_action(action) for q in qs})
        return granted[action]

    def measurable(action: str, resource) -> bool:
        if action not in scoped:
            info = catalog.info(action)
            scoped[action] = info is None or info.supports_resource_level
        return scoped[action] and isinstance(resource, str) and resource not in ("", "*")

    weighted: dict[str, float] = {}
    calls_of: dict[str, int] = {}
    unscoped = 0
    test_resources: dict[str, set[str]] = {}
    for action, resource, calls in _rows(test_usage, "calls"):
        if not measurable(action, resource):
            unscoped += int(calls)
            continue
        test_resources.setdefault(action, set()).add(resource)
        if not allows(action, resource):
            continue
        b = max((breadth(q, resource) for q in patterns(action) if covers(q, resource)), default=None)
        if b is None:  # allowed by a statement this reading skips (another evaluator); not measured
            continue
        weighted[action] = weighted.get(action, 0.0) + b * int(calls)
        calls_of[action] = calls_of.get(action, 0) + int(calls)
    train_resources: dict[str, set[str]] = {}
    for action, resource in _rows(train_usage):
        if measurable(action, resource):
            train_resources.setdefault(action, set()).add(resource)
    grants = wildcard = idle = 0
    for action in sorted(set(test_resources) | set(train_resources)):
        seen_before = train_resources.get(action, set())
        new = test_resources.get(action, set()) - seen_before
        for q in patterns(action):
            grants += 1
            if is_literal(q):
                continue
            wildcard += 1
            if not any(covers(q, r) for r in new):
                idle += 1
    measured = sum(calls_of.values())
    by_action = {a: weighted[a] / calls_of[a] for a in calls_of}
    return {
        "resource_calls": measured, "unscoped_calls": unscoped,
        "resource_breadth": (sum(weighted.values()) / measured) if measured else 0.0,
        "resource_grants": grants, "wildcard_grants": wildcard, "idle_wildcards": idle,
        "idle_rate": (idle / grants) if grants else 0.0,
        "breadth_by_action": {a: round(b, 4) for a, b in sorted(by_action.items(), key=lambda kv: (-kv[1], kv[0]))},
    }


def score(setting: Setting | str, docs: list[dict], test_usage: pd.DataFrame, evaluator: Evaluator | None = None,
          catalog=None, train_usage: pd.DataFrame | None = None) -> Score:
    """Score one policy on a test window's authorised calls.

    Under-privilege: test calls the policy would deny (counted in calls; rate = denied calls / all test calls).
    Over-privilege in actions: actions the policy grants that the test window never used (rate = unused /
    granted). Over-privilege in resources: see :func:`resource_scores`.

    Args:
        setting: the setting that produced the policy (or a label).
        docs: the policy documents.
        test_usage: authorised test-window usage with columns ``action``, ``resource``, ``calls``.
        evaluator: decides whether ``docs`` allow an (action, resource); default :class:`miner.diff.Evaluator`
            (IAM evaluation without request context: unconditional Deny wins, a used ``*`` resource matches only a
            ``*`` pattern).
        catalog: the IAM catalogue (to expand wildcards for over-privilege; default the pinned one).
        train_usage: the training usage the policy was mined from (for idle wildcard grants).

    Returns:
        The :class:`Score`.
    """
    from miner import diff

    if isinstance(setting, str):
        setting = Setting(setting)
    decide = diff.Evaluator(docs) if evaluator is None else functools.partial(evaluator, docs)

    @functools.lru_cache(maxsize=None)
    def allows(action: str, resource: str) -> bool:  # asked again by resource_scores
        return decide(action, resource)

    usage = _calls_by_resource(test_usage)
    denied_by_action: dict[str, int] = {}
    for action, resource, calls in usage.itertuples(index=False):
        if not allows(action, resource):
            denied_by_action[action] = denied_by_action.get(action, 0) + int(calls)
    total = int(usage["calls"].sum()) if len(usage) else 0
    denied = sum(denied_by_action.values())
    if catalog is None:
        from miner.catalog import get_catalog

        catalog = get_catalog()
    granted = diff.suggested_actions(docs, catalog)
    used = {catalog.canonical(a) or a for a in usage["action"]} if len(usage) else set()
    unused = sorted(granted - used)
    from miner.synthesize import policy_size

    chars = sum(policy_size(d) for d in docs)
    return Score(
        setting=setting.name, options=setting.describe(), policy_actions=len(granted),
        policy_statements=sum(len(_statements(d)) for d in docs), policy_chars=chars,
        test_calls=total, test_actions=len(used), denied_calls=denied, denied_actions=len(denied_by_action),
        unused_granted=len(unused), under_rate=(denied / total) if total else 0.0,
        over_rate=(len(unused) / len(granted)) if granted else 0.0,
        denied_by_action=dict(sorted(denied_by_action.items(), key=lambda kv: (-kv[1], kv[0]))),
        unused_granted_sample=unused[:20], wildcards=setting.wildcards, max_resources=setting.max_resources,
        service_level=setting.service_level, **resource_scores(docs, usage, train_usage, allows, catalog),
    )


#: The order :func:`pick` applies, in words (for output).
PICK_ORDER = ("fewest denied test calls, then the narrowest resources (resource breadth, then idle wildcard grants), "
              "then the fewest unused actions, then the smallest policy, then the most specific setting")


def rank_key(m: dict | Score) -> tuple:
    """The sort key of a scored setting (a :class:`Score`, its dict, or an aggregate row with the same fields).

    Under-privilege first (a denied call breaks work), then resource over-privilege (``resource_breadth``, then
    ``idle_rate``), then action over-privilege (``over_rate``), then size (``policy_chars``); a tie goes to the
    most specific setting (not service-level, the highest ``max_resources``, no action wildcards). Rates are
    rounded to 9 decimals so that float noise does not decide.

    Args:
        m: the scored setting.

    Returns:
        A tuple; the smallest is the best.
    """
    get = m.get if isinstance(m, dict) else lambda k: getattr(m, k)
    return (round(get("under_rate"), 9), round(get("resource_breadth"), 9), round(get("idle_rate"), 9),
            round(get("over_rate"), 9), get("policy_chars"), bool(get("service_level")), -get("max_resources"),
            bool(get("wildcards")))


def pick(scores: list) -> str | None:
    """The setting to recommend: the smallest :func:`rank_key`.

    Args:
        scores: the scored settings (:class:`Score` objects or their dicts).

    Returns:
        The chosen setting's name (``None`` when there are no scores).
    """
    if not scores:
        return None
    best = min(scores, key=rank_key)
    return best["setting"] if isinstance(best, dict) else best.setting


# ----------------------------------------------------------------------------------------- rendering


def _span(w: dict) -> str:
    """A window as ``2026-08-01 .. 2026-08-30 (30 days)`` (last day inclusive when it ends at midnight)."""
    try:
        since, until = datetime.fromisoformat(w["since"]), datetime.fromisoformat(w["until"])
    except (KeyError, TypeError, ValueError):
        return f"{w.get('since')} .. {w.get('until')}"
    if (until.hour, until.minute, until.second, until.microsecond) == (0, 0, 0, 0):
        last = (until - timedelta(days=1)).strftime("%Y-%m-%d")
    else:
        last = until.strftime("%Y-%m-%d %H:%M")
    days = w.get("days")
    return f"{since:%Y-%m-%d} .. {last}" + (f" ({days:g} days)" if isinstance(days, (int, float)) else "")


#: What the resource columns mean (printed under the tables).
BREADTH_LEGEND = ("res breadth: how much of each allowed test call's ARN the broadest grant leaves open (0% exact, "
                  "100% \"*\"), call-weighted; idle wildcards: wildcard grants that allowed no test resource beyond "
                  "their training ones / all resource grants of the used actions")


def _columns(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Lines of a plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    return [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]


def format_table(result: dict) -> str:
    """A plain-text table of a backtest result (what ``miner backtest`` prints).

    Args:
        result: from :func:`run_backtest`.

    Returns:
        The text, one line per setting, then the most-denied actions of each setting that denied any (control
        characters in logged values made visible, :func:`miner.escape.visible`).
    """
    lines = [
        f"principal  {result['principal']}",
        f"train      {_span(result['train'])}  ({result['train']['calls']:,} authorised calls, "
        f"{result['train']['actions']} actions)",
        f"test       {_span(result['test'])}  ({result['test']['calls']:,} authorised calls, "
        f"{result['test']['actions']} actions)",
        "",
    ]
    head = ("setting", "granted", "under-priv calls", "under rate", "denied actions", "res breadth", "idle wildcards",
            "over-priv actions", "over rate")
    rows = [(("* " if s["setting"] == result.get("recommended") else "  ") + s["setting"], str(s["policy_actions"]),
             f"{s['denied_calls']}/{s['test_calls']}", f"{100 * s['under_rate']:.1f}%", str(s["denied_actions"]),
             f"{100 * s.get('resource_breadth', 0.0):.1f}%",
             f"{s.get('idle_wildcards', 0)}/{s.get('resource_grants', 0)}",
             f"{s['unused_granted']}/{s['policy_actions']}", f"{100 * s['over_rate']:.1f}%")
            for s in result["scores"]]
    lines += _columns(head, rows)
    if result.get("recommended"):
        lines += ["", f"* recommended: {result['recommended']} ({PICK_ORDER})"]
    for s in result["scores"]:
        if s["denied_by_action"]:
            top = ", ".join(f"{a} x{n}" for a, n in list(s["denied_by_action"].items())[:6])
            lines.append(f"  denied under {s['setting']}: {top}")
    for s in result["scores"]:
        broad = [(a, b) for a, b in (s.get("breadth_by_action") or {}).items() if b > 0][:4]
        if broad:
            lines.append(f"  broadest under {s['setting']}: " + ", ".join(f"{a} {100 * b:.0f}%" for a, b in broad))
    lines += ["", BREADTH_LEGEND]
    for note in result.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(map(visible, lines)) + "\n"


# ----------------------------------------------------------------------------------------- running


def _window_dict(w: models.Window, usage_frame: pd.DataFrame) -> dict:
    return {"since": w.since.isoformat(), "until": w.until.isoformat(), "days": round(w.days, 2),
            "calls": int(usage_frame["calls"].sum()) if len(usage_frame) else 0,
            "actions": int(usage_frame["action"].nunique()) if len(usage_frame) else 0}


#: How a backtest measures (kept in its JSON).
METHOD = ("mine on the training window, replay the test window's authorised calls against each mined policy: "
          "under-privilege = test calls the policy would deny / all test calls; over-privilege in actions = granted "
          "actions unused in the test window / granted actions (Sanders & Yue, privilege error minimisation); "
          "over-privilege in resources = call-weighted breadth of the broadest grant of each allowed test call (the "
          "share of the ARN's levels it leaves open: 0 exact, 1 \"*\"), and idle wildcard grants (wildcards that "
          "allowed no test resource beyond their training ones) / resource grants")


def backtest_usage(principal_arn: str, train: models.Window, test: models.Window, train_usage: pd.DataFrame,
                   test_usage: pd.DataFrame, *, settings: Iterable[Setting] | None = None,
                   current: list[dict] | None = None, current_label: str = "attached today", catalog=None) -> dict:
    """Mine a policy per setting from collected training usage and score each on collected test usage.

    Args:
        principal_arn: the principal (for the result).
        train: the training window.
        test: the test window.
        train_usage: authorised training usage (:attr:`miner.usage.Usage.authorised`), not empty.
        test_usage: authorised test usage.
        settings: what to compare (default :func:`default_settings`).
        current: the policy documents attached today, scored as a baseline row (optional).
        current_label: the name of that row.
        catalog: the IAM catalogue (default: the pinned one).

    Returns:
        The result dict of :func:`run_backtest`.
    """
    from miner import synthesize

    if catalog is None:
        from miner.catalog import get_catalog

        catalog = get_catalog()
    settings = list(settings) if settings is not None else default_settings()
    notes = []
    first = pd.Timestamp(train_usage["first_seen"].min())
    if first.tzinfo is None:
        first = first.tz_localize("UTC")
    lag = (first - pd.Timestamp(train.since)).total_seconds() / 86400
    if lag > max(2.0, 0.2 * train.days):
        notes.append(f"the first authorised call in the training window is on {first:%Y-%m-%d}, {lag:.0f} days after "
                     f"it starts: the store (or the principal) may not reach back that far, so the policy was mined "
                     f"from about {train.days - lag:.0f} days")
    if test_usage.empty:
        notes.append(f"no authorised calls in the test window {test}: under-privilege cannot be measured")
    scores = []
    unused_before: set[str] | None = None
    if current is not None:
        from miner.diff import suggested_actions

        used = {catalog.canonical(a) or a for a in train_usage["action"]}
        unused_before = suggested_actions(current, catalog) - used
    for st in settings:
        if st.service_level:
            docs = [service_level_policy(train_usage["action"])]
        else:
            docs = synthesize.synthesize(train_usage, max_resources=st.max_resources, wildcards=st.wildcards,
                                         catalog=catalog).policies
        scores.append(score(st, docs, test_usage, catalog=catalog, train_usage=train_usage))
        if unused_before:
            from miner.diff import suggested_actions

            scores[-1].unused_cut = 1 - len(unused_before & suggested_actions(docs, catalog)) / len(unused_before)
    baseline = None
    if current is not None:
        baseline = score(Setting(current_label), current, test_usage, catalog=catalog, train_usage=train_usage)
        baseline.options = "the policies attached now"
    return {
        "principal": principal_arn,
        "train": _window_dict(train, train_usage),
        "test": _window_dict(test, test_usage),
        "scores": [s.to_dict() for s in scores] + ([baseline.to_dict()] if baseline else []),
        "recommended": pick(scores),
        "method": METHOD,
        "notes": notes,
    }


def run_backtest(con, principal, train: models.Window, test: models.Window, *,
                 settings: Iterable[Setting] | None = None, current: list[dict] | None = None,
                 current_label: str = "attached today", catalog=None) -> dict:
    """Mine a policy per setting on the training window and score each on the test window.

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        principal: a :class:`miner.usage.Principal`.
        train: the training window (mining).
        test: the test window (replay); normally right after ``train``.
        settings: what to compare (default :func:`default_settings`).
        current: the policy documents attached today, scored as a baseline row (optional).
        current_label: the name of that row.
        catalog: the IAM catalogue (default: the pinned one).

    Returns:
        A JSON-ready dict: ``principal``, ``train`` and ``test`` (window, authorised calls, actions), ``scores``
        (one :class:`Score` dict per setting), ``recommended`` (see :func:`pick`), ``method`` and ``notes``.

    Raises:
        ValueError: when the test window starts before the training window ends (test calls would leak into
            the mined policy), or the training window holds no authorised call to mine from.
    """
    from miner import usage

    if test.since < train.until:
        raise ValueError(f"the test window {test} starts before the training window {train} ends: the policy would "
                         f"be mined from calls it is then scored on")
    train_usage = usage.collect(con, principal, train).authorised
    test_usage = usage.collect(con, principal, test).authorised
    if train_usage.empty:
        raise ValueError(f"{principal.arn} made no authorised calls in the training window {train}: nothing to mine; "
                         f"move --until or lengthen --train")
    return backtest_usage(principal.arn, train, test, train_usage, test_usage, settings=settings, current=current,
                          current_label=current_label, catalog=catalog)


# ----------------------------------------------------------------------------------------- every principal

#: Why ``run_backtest_all`` leaves a principal out (the keys of ``skipped_by_reason``).
SKIP_NOT_IAM = "not an IAM role or user (no identity policy to suggest)"
SKIP_HISTORY = "too little history before the anchor (--min-days)"
SKIP_NO_TRAIN = "no authorised calls in the training window"
SKIP_NO_TEST = "no authorised calls in the test window"

#: The per-setting figures :func:`aggregate` summarises over principals (mean, median, worst).
AGGREGATED = ("under_rate", "resource_breadth", "idle_rate", "over_rate")


def _utc(t) -> datetime:
    t = pd.Timestamp(t).to_pydatetime()
    return t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)


def run_backtest_all(con, *, train_days: float = 60, test_days: float = 30, until: datetime | None = None,
                     min_days: float = 30, settings: Iterable[Setting] | None = None,
                     current_for: Callable[[str], list[dict] | None] | None = None,
                     current_label: str = "attached today", catalog=None,
                     progress: Callable[[int, int, str | None], None] | None = None) -> dict:
    """Backtest every IAM role and user with enough history, and summarise each setting over them.

    A principal is measured when it is a role or user, has at least ``min_days`` from its first event to the
    anchor, and made authorised calls in both windows; the others are listed in ``skipped`` with the reason.
    Each principal costs two usage queries (one per window) and one mapping pass each, on the same connection.

    Args:
        con: a DuckDB connection from :func:`miner.store.connect`.
        train_days: training window length in days.
        test_days: test window length in days.
        until: one anchor for every principal (end of the test window); default: the midnight after each
            principal's last event (as :func:`default_anchor`).
        min_days: the history a principal needs before the anchor, in days.
        settings: what to compare (default :func:`default_settings`).
        current_for: principal ARN -> the policy documents attached today (or ``None``), scored as a baseline
            row that is never recommended.
        current_label: the name of that row.
        catalog: the IAM catalogue (default: the pinned one).
        progress: called as ``progress(done, total, principal_arn)`` before each principal and once at the end
            (``principal_arn`` ``None``).

    Returns:
        A JSON-ready dict: ``train_days``, ``test_days``, ``until`` (ISO or ``None``), ``min_days``,
        ``principals`` (one :func:`run_backtest` result each, busiest test window first), ``skipped``
        (``principal``, ``reason``, ``detail``), ``skipped_by_reason``, ``settings`` (see :func:`aggregate`),
        ``recommended`` (the default to choose: of the settings ``miner suggest`` offers, so neither
        service-level nor the attached policies, the one :func:`rank_key` puts first on the means over
        principals), ``pick_order`` and ``method``.

    Raises:
        ValueError: when a length is not positive or ``min_days`` is negative.
    """
    from miner import usage

    split_windows(datetime(2000, 1, 1, tzinfo=timezone.utc), train_days, test_days)  # validates the lengths
    if not (min_days >= 0 and math.isfinite(min_days)):
        raise ValueError("--min-days must be a number of days >= 0")
    if catalog is None:
        from miner.catalog import get_catalog

        catalog = get_catalog()
    settings = list(settings) if settings is not None else default_settings()
    everything = models.Window(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(2200, 1, 1, tzinfo=timezone.utc))
    table = usage.principals(con, everything).sort_values("principal_arn", kind="stable")
    results, skipped = [], []
    for i, row in enumerate(table.itertuples(index=False)):
        if progress:
            progress(i, len(table), row.principal_arn)
        who = usage.Principal(str(row.principal_arn), row.principal_type, row.principal_name, row.principal_account)
        if who.kind not in ("role", "user"):
            skipped.append({"principal": who.arn, "reason": SKIP_NOT_IAM, "detail": str(row.principal_type)})
            continue
        anchor = until or default_anchor(_utc(row.last_seen))
        history = (anchor - _utc(row.first_seen)).total_seconds() / 86400
        if history < min_days:
            skipped.append({"principal": who.arn, "reason": SKIP_HISTORY,
                            "detail": f"{max(history, 0):.1f} days < {min_days:g}"})
            continue
        train, test = split_windows(anchor, train_days, test_days)
        train_usage = usage.collect(con, who, train).authorised
        if train_usage.empty:
            skipped.append({"principal": who.arn, "reason": SKIP_NO_TRAIN, "detail": str(train)})
            continue
        test_usage = usage.collect(con, who, test).authorised
        if test_usage.empty:
            skipped.append({"principal": who.arn, "reason": SKIP_NO_TEST, "detail": str(test)})
            continue
        current = current_for(who.arn) if current_for else None
        results.append(backtest_usage(who.arn, train, test, train_usage, test_usage, settings=settings,
                                      current=current, current_label=current_label, catalog=catalog))
    if progress:
        progress(len(table), len(table), None)
    results.sort(key=lambda r: (-r["test"]["calls"], r["principal"]))
    rows = aggregate(results)
    by_reason: dict[str, int] = {}
    for sk in skipped:
        by_reason[sk["reason"]] = by_reason.get(sk["reason"], 0) + 1
    names = {st.name for st in settings if not st.service_level}  # service-level is a yardstick, not an option
    return {
        "train_days": train_days, "test_days": test_days, "until": until.isoformat() if until else None,
        "min_days": min_days, "principals": results, "skipped": skipped,
        "skipped_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "settings": rows, "recommended": pick([r for r in rows if r["setting"] in names]),
        "pick_order": PICK_ORDER, "method": METHOD,
    }


def aggregate(results: list[dict]) -> list[dict]:
    """Each setting summarised over the principals that were backtested.

    Args:
        results: :func:`run_backtest` results.

    Returns:
        One dict per setting, in the order the results list them: ``setting``, ``options``, ``wildcards``,
        ``max_resources``, ``service_level``, ``principals`` (how many were scored with it),
        ``resource_principals`` (those with at least one allowed test call whose resource breadth could be
        measured: ``resource_breadth`` is summarised over these only, as it is undefined for the others); for each
        of :data:`AGGREGATED` the mean under its own name, ``<name>_median``, ``<name>_max`` and ``<name>_worst``
        (the principal with the highest value; the first by ARN on a tie); ``policy_chars`` (mean);
        ``test_calls``, ``denied_calls`` and ``pooled_under_rate`` (denied over all test calls of every
        principal); ``picked`` (for how many principals it was the recommendation).
    """
    import statistics

    per: dict[str, list[tuple[str, dict]]] = {}
    picked: dict[str, int] = {}
    for r in results:
        picked[r["recommended"]] = picked.get(r["recommended"], 0) + 1
        for sc in r["scores"]:
            per.setdefault(sc["setting"], []).append((r["principal"], sc))
    rows = []
    for name, pairs in per.items():
        first = pairs[0][1]
        row = {"setting": name, "options": first["options"], "wildcards": first["wildcards"],
               "max_resources": first["max_resources"], "service_level": first["service_level"],
               "principals": len(pairs)}
        measured = [(a, sc) for a, sc in pairs if sc["resource_calls"]]
        row["resource_principals"] = len(measured)
        for key in AGGREGATED:
            among = (measured if key == "resource_breadth" else pairs) or [("", {key: 0.0})]
            values = [sc[key] for _, sc in among]
            worst = min(among, key=lambda ps: (-ps[1][key], ps[0]))
            row.update({key: statistics.fmean(values), f"{key}_median": statistics.median(values),
                        f"{key}_max": worst[1][key], f"{key}_worst": worst[0]})
        tests = sum(sc["test_calls"] for _, sc in pairs)
        denied = sum(sc["denied_calls"] for _, sc in pairs)
        row.update({"policy_chars": statistics.fmean(sc["policy_chars"] for _, sc in pairs), "test_calls": tests,
                    "denied_calls": denied, "pooled_under_rate": denied / tests if tests else 0.0,
                    "picked": picked.get(name, 0)})
        rows.append(row)
    return rows


def _short(arn: str) -> str:
    """A principal's name for a narrow column: the last path segment of its ARN."""
    return arn.rsplit("/", 1)[-1]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_all_table(result: dict) -> str:
    """A plain-text report of :func:`run_backtest_all`: settings over principals, then one line per principal.

    Args:
        result: from :func:`run_backtest_all`.

    Returns:
        The text (logged values made visible, :func:`miner.escape.visible`).
    """
    ends = f"ending {result['until']}" if result["until"] else "each ending at the midnight after the principal's last event"
    lines = [f"backtest of {len(result['principals'])} principals: train {result['train_days']:g} days, test "
             f"{result['test_days']:g} days, {ends}; at least {result['min_days']:g} days of history", ""]
    head = ("setting", "n", "under mean", "median", "worst", "res breadth mean", "median", "worst",
            "idle wildcards", "over mean", "picked")
    rows = []

    def worst(r: dict, key: str) -> str:
        return _pct(r[f"{key}_max"]) + (f" {_short(r[f'{key}_worst'])}" if r[f"{key}_max"] > 0 else "")

    for r in result["settings"]:
        mark = "* " if r["setting"] == result.get("recommended") else "  "
        rows.append((mark + r["setting"], str(r["principals"]), _pct(r["under_rate"]), _pct(r["under_rate_median"]),
                     worst(r, "under_rate"), _pct(r["resource_breadth"]), _pct(r["resource_breadth_median"]),
                     worst(r, "resource_breadth"), _pct(r["idle_rate"]), _pct(r["over_rate"]), str(r["picked"])))
    lines += _columns(head, rows)
    if result.get("recommended"):
        lines += ["", f"* recommended default: {result['recommended']} (on the means: {PICK_ORDER})"]
    lines.append("")
    head = ("principal", "test calls", "recommended", "under", "res breadth", "idle wildcards", "over")
    rows = []
    for r in result["principals"]:
        best = next(s for s in r["scores"] if s["setting"] == r["recommended"])
        rows.append((r["principal"], f"{r['test']['calls']:,}", r["recommended"], _pct(best["under_rate"]),
                     _pct(best["resource_breadth"]), f"{best['idle_wildcards']}/{best['resource_grants']}",
                     _pct(best["over_rate"])))
    lines += _columns(head, rows)
    cut = _unused_cut_lines(result)
    if cut:
        lines += ["", f"unused grants cut: of the actions the attached policies grant that the training window never "
                      f"used, the share {DEFAULT_SETTING} (the suggest default) no longer grants"] + cut
    if result["skipped"]:
        lines += ["", f"skipped {len(result['skipped'])} principals: "
                      + "; ".join(f"{n} {reason}" for reason, n in result["skipped_by_reason"].items())]
        lines += [f"  {sk['principal']}: {sk['reason']} ({sk['detail']})" for sk in result["skipped"]
                  if sk["reason"] != SKIP_NOT_IAM]
    lines += ["", BREADTH_LEGEND]
    return "\n".join(map(visible, lines)) + "\n"


#: The setting ``miner suggest`` uses by default (the figures of the unused-grants cut).
DEFAULT_SETTING = "wildcards, max-resources 10"


def _unused_cut_lines(result: dict) -> list[str]:
    """``  principal  97.5% of 255`` lines for the principals whose attached policies are known."""
    out = []
    for r in result["principals"]:
        s = next((x for x in r["scores"] if x["setting"] == DEFAULT_SETTING and x.get("unused_cut") is not None), None)
        if s is not None:
            out.append(f"  {r['principal']}  {_pct(s['unused_cut'])}")
    return out


#: The columns of :func:`all_csv`.
CSV_COLUMNS = ("principal", "setting", "options", "recommended", "train_since", "test_since", "test_until",
               "test_calls", "denied_calls", "under_rate", "resource_calls", "resource_breadth", "resource_grants",
               "wildcard_grants", "idle_wildcards", "idle_rate", "policy_actions", "unused_granted", "over_rate",
               "policy_chars")


def all_csv(result: dict) -> str:
    """:func:`run_backtest_all` as CSV: one row per (principal, setting) (:data:`CSV_COLUMNS`).

    Args:
        result: from :func:`run_backtest_all`.

    Returns:
        CSV text, every cell quoted and escaped (:func:`miner.escape.csv_text`).
    """
    from miner.escape import csv_text

    rows = []
    for r in result["principals"]:
        for s in r["scores"]:
            rows.append([r["principal"], s["setting"], s["options"], s["setting"] == r["recommended"],
                         r["train"]["since"], r["test"]["since"], r["test"]["until"]]
                        + [s[c] for c in CSV_COLUMNS[7:]])
    return csv_text(list(CSV_COLUMNS), rows)


def to_frame(result: dict) -> pd.DataFrame:
    """The scores of a backtest as a DataFrame (one row per setting; for notebooks).

    Args:
        result: from :func:`run_backtest`.

    Returns:
        Columns setting, options, granted, test_calls, denied_calls, under_rate, denied_actions, resource_breadth,
        idle_wildcards, resource_grants, unused_granted, over_rate, policy_chars, recommended.
    """
    rows = [{"setting": s["setting"], "options": s["options"], "granted": s["policy_actions"],
             "test_calls": s["test_calls"], "denied_calls": s["denied_calls"], "under_rate": s["under_rate"],
             "denied_actions": s["denied_actions"], "resource_breadth": s["resource_breadth"],
             "idle_wildcards": s["idle_wildcards"], "resource_grants": s["resource_grants"],
             "unused_granted": s["unused_granted"], "over_rate": s["over_rate"],
             "policy_chars": s["policy_chars"], "recommended": s["setting"] == result.get("recommended")}
            for s in result["scores"]]
    return pd.DataFrame(rows)
