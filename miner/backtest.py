"""Backtests suggested policies: mine on a training window, replay a later test window, count privilege errors."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import pandas as pd

from miner import models
from miner.escape import visible

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


def score(setting: Setting | str, docs: list[dict], test_usage: pd.DataFrame, evaluator: Evaluator | None = None,
          catalog=None) -> Score:
    """Score one policy on a test window's authorised calls.

    Under-privilege: test calls the policy would deny (counted in calls; rate = denied calls / all test calls).
    Over-privilege: actions the policy grants that the test window never used (rate = unused / granted).

    Args:
        setting: the setting that produced the policy (or a label).
        docs: the policy documents.
        test_usage: authorised test-window usage with columns ``action``, ``resource``, ``calls``.
        evaluator: decides whether ``docs`` allow an (action, resource); default :class:`miner.diff.Evaluator`
            (IAM evaluation without request context: unconditional Deny wins, a used ``*`` resource matches only a
            ``*`` pattern).
        catalog: the IAM catalogue (to expand wildcards for over-privilege; default the pinned one).

    Returns:
        The :class:`Score`.
    """
    from miner import diff

    if isinstance(setting, str):
        setting = Setting(setting)
    if evaluator is None:
        compiled = diff.Evaluator(docs)
        allows = lambda action, resource: compiled(action, resource)  # noqa: E731
    else:
        allows = lambda action, resource: evaluator(docs, action, resource)  # noqa: E731
    usage = test_usage.groupby(["action", "resource"], as_index=False, sort=True)["calls"].sum() if len(test_usage) \
        else pd.DataFrame(columns=["action", "resource", "calls"])
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
        service_level=setting.service_level,
    )


def pick(scores: list[Score]) -> str | None:
    """The setting to recommend: fewest denied test calls, then least over-privilege, then the most specific.

    Over-privilege is counted in actions, so settings that differ only in how far they generalise resources tie
    on it; the tie goes to the most specific one (not service-level, the highest ``max_resources``, no action
    wildcards), then to the smallest policy.

    Args:
        scores: the scored settings.

    Returns:
        The chosen setting's name (``None`` when there are no scores).
    """
    if not scores:
        return None
    return min(scores, key=lambda s: (round(s.under_rate, 9), round(s.over_rate, 9), s.service_level,
                                      -s.max_resources, s.wildcards, s.policy_chars)).setting


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
    head = ("setting", "granted", "under-priv calls", "under rate", "denied actions", "over-priv actions", "over rate")
    rows = [(("* " if s["setting"] == result.get("recommended") else "  ") + s["setting"], str(s["policy_actions"]),
             f"{s['denied_calls']}/{s['test_calls']}", f"{100 * s['under_rate']:.1f}%", str(s["denied_actions"]),
             f"{s['unused_granted']}/{s['policy_actions']}", f"{100 * s['over_rate']:.1f}%")
            for s in result["scores"]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    lines.append(fmt.format(*head))
    lines.append(fmt.format(*("-" * w for w in widths)))
    lines += [fmt.format(*r) for r in rows]
    if result.get("recommended"):
        lines += ["", f"* recommended: {result['recommended']} (fewest denied test calls, then least over-privilege, "
                      "then the most specific resources)"]
    for s in result["scores"]:
        if s["denied_by_action"]:
            top = ", ".join(f"{a} x{n}" for a, n in list(s["denied_by_action"].items())[:6])
            lines.append(f"  denied under {s['setting']}: {top}")
    for note in result.get("notes") or []:
        lines.append(f"note: {note}")
    return "\n".join(map(visible, lines)) + "\n"


# ----------------------------------------------------------------------------------------- running


def _window_dict(w: models.Window, usage_frame: pd.DataFrame) -> dict:
    return {"since": w.since.isoformat(), "until": w.until.isoformat(), "days": round(w.days, 2),
            "calls": int(usage_frame["calls"].sum()) if len(usage_frame) else 0,
            "actions": int(usage_frame["action"].nunique()) if len(usage_frame) else 0}


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
    from miner import synthesize, usage

    if test.since < train.until:
        raise ValueError(f"the test window {test} starts before the training window {train} ends: the policy would "
                         f"be mined from calls it is then scored on")
    if catalog is None:
        from miner.catalog import get_catalog

        catalog = get_catalog()
    settings = list(settings) if settings is not None else default_settings()
    train_usage = usage.collect(con, principal, train).authorised
    test_usage = usage.collect(con, principal, test).authorised
    if train_usage.empty:
        raise ValueError(f"{principal.arn} made no authorised calls in the training window {train}: nothing to mine; "
                         f"move --until or lengthen --train")
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
    for st in settings:
        if st.service_level:
            docs = [service_level_policy(train_usage["action"])]
        else:
            docs = synthesize.synthesize(train_usage, max_resources=st.max_resources, wildcards=st.wildcards,
                                         catalog=catalog).policies
        scores.append(score(st, docs, test_usage, catalog=catalog))
    baseline = None
    if current is not None:
        baseline = score(Setting(current_label), current, test_usage, catalog=catalog)
        baseline.options = "the policies attached now"
    recommended = pick(scores)
    return {
        "principal": principal.arn,
        "train": _window_dict(train, train_usage),
        "test": _window_dict(test, test_usage),
        "scores": [s.to_dict() for s in scores] + ([baseline.to_dict()] if baseline else []),
        "recommended": recommended,
        "method": ("mine on the training window, replay the test window's authorised calls against each mined policy: "
                   "under-privilege = test calls the policy would deny / all test calls; over-privilege = granted "
                   "actions unused in the test window / granted actions (Sanders & Yue, privilege error "
                   "minimisation)"),
        "notes": notes,
    }


def to_frame(result: dict) -> pd.DataFrame:
    """The scores of a backtest as a DataFrame (one row per setting; for notebooks).

    Args:
        result: from :func:`run_backtest`.

    Returns:
        Columns setting, options, granted, test_calls, denied_calls, under_rate, denied_actions, unused_granted,
        over_rate, policy_chars, recommended.
    """
    rows = [{"setting": s["setting"], "options": s["options"], "granted": s["policy_actions"],
             "test_calls": s["test_calls"], "denied_calls": s["denied_calls"], "under_rate": s["under_rate"],
             "denied_actions": s["denied_actions"], "unused_granted": s["unused_granted"], "over_rate": s["over_rate"],
             "policy_chars": s["policy_chars"], "recommended": s["setting"] == result.get("recommended")}
            for s in result["scores"]]
    return pd.DataFrame(rows)
