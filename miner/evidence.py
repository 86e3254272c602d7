"""Evidence per granted action from two witnesses: CloudTrail (the window's calls) and IAM Access Advisor (400 days)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    import pandas as pd

#: The kinds of evidence, strongest "keep" first and strongest "remove" in the middle.
USED_CLOUDTRAIL = "used_cloudtrail"          # seen in authorised calls of the window (with their count)
USED_ADVISOR = "used_advisor"                # not in the window's trail, but Access Advisor saw it (last date)
UNUSED_PROVEN = "unused_proven"              # tracked by Access Advisor and never accessed in its tracking period
UNUSED_CLOUDTRAIL = "unused_cloudtrail"      # not in the window's trail; Access Advisor cannot say
UNOBSERVABLE = "unobservable"                # CloudTrail could not have seen it, and Access Advisor cannot say
BLOCKED = "blocked"                          # an SCP or RCP denies it (miner.organizations): not usable, no risk
KINDS = (USED_CLOUDTRAIL, USED_ADVISOR, UNUSED_PROVEN, UNUSED_CLOUDTRAIL, UNOBSERVABLE, BLOCKED)
LABELS = {
    USED_CLOUDTRAIL: "used (CloudTrail)",
    USED_ADVISOR: "used (Access Advisor only)",
    UNUSED_PROVEN: "unused, proven by Access Advisor",
    UNUSED_CLOUDTRAIL: "unused (CloudTrail only)",
    UNOBSERVABLE: "unobservable",
    BLOCKED: "blocked by SCP or RCP",
}
COLUMNS = ["action", "service", "evidence", "calls", "last_accessed", "service_never_accessed", "detail"]


# ----------------------------------------------------------------------------------------- which actions are tracked


@lru_cache(maxsize=1)
def tracked_services() -> frozenset[str]:
    """Services Access Advisor reports at action level, from ``miner/data/advisor_tracked.csv`` (AWS's table).

    Returns:
        Lower-case IAM prefixes.
    """
    text = (resources.files("miner") / "data" / "advisor_tracked.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
    return frozenset(r["service"].strip().lower() for r in rows)


@lru_cache(maxsize=1)
def _reference_flags() -> dict[str, bool]:
    """``SupportedBy."IAM Action Last Accessed"`` flags of the ``$MINER_SERVICE_REFERENCE`` files (empty without)."""
    from miner.servicereference import load_service_reference, service_reference_dir

    where = service_reference_dir()
    if not where:
        return {}
    try:
        return dict(load_service_reference(where).last_accessed)
    except FileNotFoundError:
        return {}


def is_tracked(action: str) -> bool:
    """Whether Access Advisor tracks an action at action level: the service reference flag where the
    ``$MINER_SERVICE_REFERENCE`` files carry one, else whether AWS's table lists its service.

    Args:
        action: ``prefix:Action``.

    Returns:
        True when an ``ACTION_LEVEL`` report should list it.
    """
    flags = _reference_flags()
    flag = flags.get(action.lower())
    if flag is not None:
        return flag
    return action.split(":", 1)[0].lower() in tracked_services()


# ----------------------------------------------------------------------------------------- one principal's report


@dataclass(frozen=True)
class Seen:
    """What Access Advisor reports for one service or action: the last access (``None``: never in the period)."""

    last_accessed: datetime | None
    region: str | None = None
    entity: str | None = None


@dataclass
class Witness:
    """One principal's Access Advisor report, as the store's advisor table holds it."""

    principal_arn: str
    job_completed: datetime
    tracking_start: datetime
    source: str = ""
    services: dict[str, Seen] = field(default_factory=dict)  # prefix (lower) -> the service row
    action_level: set[str] = field(default_factory=set)  # services whose report listed tracked actions
    actions: dict[str, Seen] = field(default_factory=dict)  # prefix:action (lower) -> the tracked action row

    @classmethod
    def of(cls, frame: pd.DataFrame, arn: str) -> Witness | None:
        """The report of one principal from :func:`miner.advisor.read`'s frame.

        Args:
            frame: the advisor table (each principal's latest report).
            arn: the principal.

        Returns:
            The witness, or ``None`` when the table has no rows for it.
        """
        if frame is None or not len(frame):
            return None
        rows = frame[frame["principal_arn"].str.lower() == arn.lower()]
        if not len(rows):
            return None
        first = rows.iloc[0]
        w = cls(arn, _py(first["job_completed"]), _py(first["tracking_start"]), str(first["source"] or ""))
        for r in rows.itertuples(index=False):
            seen = Seen(_py(r.last_accessed), _str(r.last_accessed_region), _str(r.last_accessed_entity))
            svc = str(r.service_namespace).lower()
            if isinstance(r.action, str) and r.action:
                w.actions[r.action.lower()] = seen
            else:
                w.services[svc] = seen
                if bool(r.tracked):
                    w.action_level.add(svc)
        return w

    @cached_property
    def since(self) -> str:
        """``since YYYY-MM-DD``: the start of the tracking period, as the verdicts say it."""
        return f"since {_day(self.tracking_start)}"

    def meta(self) -> dict:
        """The report's dates and source, JSON-ready."""
        return {"job_completed": self.job_completed.isoformat(), "tracking_start": self.tracking_start.isoformat(),
                "source": self.source, "services": len(self.services),
                "services_never_accessed": sum(1 for s in self.services.values() if s.last_accessed is None)}


def _py(v: Any) -> datetime | None:
    import pandas as pd

    if v is None or pd.isna(v):  # None, NaN, NaT
        return None
    return v.to_pydatetime() if hasattr(v, "to_pydatetime") else v


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _day(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d}" if t else "never"


# ----------------------------------------------------------------------------------------- classification


@dataclass(frozen=True)
class Evidence:
    """The evidence for one granted action."""

    action: str
    kind: str
    calls: int = 0
    last_accessed: datetime | None = None
    service_never_accessed: bool = False
    detail: str = ""


def classify(action: str, status: str, *, calls: int = 0, witness: Witness | None = None,
             reason: str = "") -> Evidence:
    """The evidence for one granted action.

    CloudTrail decides first: an action used in the window's authorised calls is ``used_cloudtrail``; one an SCP or
    RCP blocks (the diff's ``blocked``) is ``blocked``, whatever Access Advisor says. Otherwise Access Advisor, when it has a report for the principal:

    - the action's service was never accessed in the tracking period: ``unused_proven`` (for every action of it,
      logged or not: no request of the principal reached the service);
    - the report tracks the action: ``used_advisor`` with its last date, or ``unused_proven`` when it was never
      accessed;
    - else Access Advisor cannot tell: ``unused_cloudtrail`` or ``unobservable``, as CloudTrail alone says.

    Args:
        action: the granted action.
        status: the diff's classification (``used``, ``unused``, ``unobservable`` or ``blocked`` by an SCP or
            RCP, :func:`miner.diff.classify`).
        calls: the window's authorised calls of the action.
        witness: the principal's Access Advisor report, or ``None``.
        reason: why the action is unobservable (the diff's reason).

    Returns:
        The :class:`Evidence`.
    """
    if status == "used":
        return Evidence(action, USED_CLOUDTRAIL, calls, detail=f"{calls:,} authorised calls in the window")
    if status == "blocked":  # whatever Access Advisor says, the organization denies it
        return Evidence(action, BLOCKED, detail=reason)
    fallback = UNOBSERVABLE if status == "unobservable" else UNUSED_CLOUDTRAIL
    if witness is None:
        return Evidence(action, fallback, detail=reason)
    svc = action.split(":", 1)[0].lower()
    service = witness.services.get(svc)
    since = witness.since
    if service is None:
        return Evidence(action, fallback, detail=_join(reason, "Access Advisor's report does not list the service "
                                                               "(not allowed by the identity policies it reads)"))
    if service.last_accessed is None:
        return Evidence(action, UNUSED_PROVEN, service_never_accessed=True,
                        detail=f"Access Advisor: no request to {svc} {since}")
    seen = witness.actions.get(action.lower())
    if seen is not None:
        if seen.last_accessed is not None:
            return Evidence(action, USED_ADVISOR, last_accessed=seen.last_accessed,
                            detail=f"Access Advisor: last accessed {_day(seen.last_accessed)}"
                                   + (f" in {seen.region}" if seen.region else ""))
        return Evidence(action, UNUSED_PROVEN, detail=f"Access Advisor tracks it: not accessed {since}")
    why = ("Access Advisor tracks this service's actions but its report does not list this one"
           if svc in witness.action_level else
           "Access Advisor reports this service at action level, but this report is service-level"
           if is_tracked(action) else "Access Advisor does not track this action (service level only)")
    return Evidence(action, fallback, last_accessed=None,
                    detail=_join(reason, f"{why}; {svc} last accessed {_day(service.last_accessed)}"))


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def classify_all(classification: pd.DataFrame, calls: dict[str, int], witness: Witness | None) -> pd.DataFrame:
    """The evidence of every granted action.

    Args:
        classification: the diff's classification (columns action, status, reason).
        calls: action -> authorised calls in the window.
        witness: the principal's Access Advisor report, or ``None``.

    Returns:
        A frame with :data:`COLUMNS`, in the classification's order.
    """
    import pandas as pd

    if classification is None or not len(classification):
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for a, st, why in zip(classification["action"].tolist(), classification["status"].tolist(),
                          classification["reason"].tolist()):
        e = classify(a, st, calls=int(calls.get(a, 0)), witness=witness, reason=why if isinstance(why, str) else "")
        rows.append((a, a.split(":", 1)[0], e.kind, e.calls, e.last_accessed.isoformat() if e.last_accessed else None,
                     e.service_never_accessed, e.detail))
    return pd.DataFrame(rows, columns=COLUMNS)


def calls_by_action(usage: pd.DataFrame) -> dict[str, int]:
    """Authorised calls per action from usage rows (columns action, calls).

    Args:
        usage: authorised usage rows.

    Returns:
        action -> calls.
    """
    out: dict[str, int] = {}
    if usage is not None and len(usage):
        for a, n in zip(usage["action"].tolist(), usage["calls"].tolist()):
            if isinstance(a, str):
                out[a] = out.get(a, 0) + int(n or 0)
    return out


def never_accessed(frame: pd.DataFrame) -> list[dict]:
    """The granted services Access Advisor saw no request to in its tracking period: the strongest removal
    candidates, most granted actions first.

    Args:
        frame: :func:`classify_all`'s frame.

    Returns:
        ``{"service", "actions"}`` dicts.
    """
    if frame is None or not len(frame):
        return []
    counts = frame[frame["service_never_accessed"]].groupby("service")["action"].count()
    return [{"service": s, "actions": int(n)} for s, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many granted actions have each kind of evidence.

    Args:
        frame: :func:`classify_all`'s frame.

    Returns:
        kind -> count, every kind present (zeros included).
    """
    got = frame["evidence"].value_counts().to_dict() if frame is not None and len(frame) else {}
    return {k: int(got.get(k, 0)) for k in KINDS}


def summary(frame: pd.DataFrame, witness: Witness | None, *, sample: int = 50) -> dict:
    """The evidence of one principal's grants as a review or a diff report keeps it (JSON-ready).

    Args:
        frame: :func:`classify_all`'s frame.
        witness: the principal's Access Advisor report (``None``: CloudTrail only).
        sample: how many actions to list per kind (the counts cover all).

    Returns:
        ``advisor`` (the report's dates), ``counts``, ``never_accessed_services`` and, per kind but CloudTrail's
        own, up to ``sample`` actions with their detail.
    """
    out: dict[str, Any] = {"advisor": witness.meta() if witness else None, "counts": counts(frame),
                           "never_accessed_services": never_accessed(frame)}
    for kind in (USED_ADVISOR, UNUSED_PROVEN):
        rows = frame[frame["evidence"] == kind] if len(frame) else frame
        if kind == UNUSED_PROVEN:  # the services never accessed are listed whole above
            rows = rows[~rows["service_never_accessed"]] if len(rows) else rows
        out[kind] = [{"action": r["action"], "last_accessed": r["last_accessed"], "detail": r["detail"]}
                     for r in records(rows.head(sample))]
    return out


def records(frame: pd.DataFrame) -> list[dict]:
    """The rows of an evidence frame as dicts, a missing value as ``None`` (never NaN: JSON stays strict).

    Args:
        frame: :func:`classify_all`'s frame (or a part of it).

    Returns:
        One dict per row.
    """
    import pandas as pd

    return [{k: (None if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


def text_lines(frame: pd.DataFrame, witness: Witness | None, *, limit: int = 15) -> list[str]:
    """The evidence section of the ``suggest --diff`` text report (plain text; the caller makes it visible).

    Args:
        frame: :func:`classify_all`'s frame.
        witness: the principal's Access Advisor report.
        limit: how many items per list.

    Returns:
        The lines (empty without a witness: the report then says what it always said).
    """
    if witness is None:
        return []
    c = counts(frame)
    out = ["", f"evidence per granted action (CloudTrail in the window + IAM Access Advisor, report of "
               f"{_day(witness.job_completed)}, tracking since {_day(witness.tracking_start)}):",
           "  " + " / ".join(f"{LABELS[k]} {c[k]:,}" for k in KINDS)]
    never = never_accessed(frame)
    if never:
        out.append("  removal candidates, services never accessed in Access Advisor's tracking period (strongest):")
        out += [f"    {n['service']}: {n['actions']:,} granted actions" for n in never[:limit]]
        if len(never) > limit:
            out.append(f"    ... ({len(never) - limit} more services)")
    for kind in (UNUSED_PROVEN, USED_ADVISOR):
        rows = frame[(frame["evidence"] == kind) & ~frame["service_never_accessed"]] if len(frame) else frame
        if len(rows):
            out.append(f"  {LABELS[kind]}:")
            out += [f"    {r.action}: {r.detail}" for r in rows.head(limit).itertuples(index=False)]
            if len(rows) > limit:
                out.append(f"    ... ({len(rows) - limit} more)")
    return out


def rank_services(services: Iterable[str], never: Iterable[str]) -> list[str]:
    """Unused services with those Access Advisor proves never accessed first (otherwise in the given order).

    Args:
        services: unused services, riskiest first.
        never: services never accessed in the tracking period.

    Returns:
        The reordered list.
    """
    never = set(never)
    services = list(services)
    return [s for s in services if s in never] + [s for s in services if s not in never]


# ----------------------------------------------------------------------------------------- the review


def removal_candidates(principals: list[dict]) -> list[dict]:
    """The review's strongest removal candidates: per principal, the granted services Access Advisor saw no request
    to in its tracking period; most such granted actions first.

    Args:
        principals: the review's principal entries (those with ``evidence``).

    Returns:
        ``{"arn", "name", "rank", "tracking_start", "services": [{"service", "actions"}], "actions"}`` dicts.
    """
    out = []
    for p in principals:
        ev = p.get("evidence") or {}
        never = ev.get("never_accessed_services") or []
        if never:
            out.append({"arn": p.get("arn"), "name": p.get("name"), "rank": p.get("rank"),
                        "tracking_start": (ev.get("advisor") or {}).get("tracking_start"), "services": never,
                        "actions": sum(int(n["actions"]) for n in never)})
    return sorted(out, key=lambda c: (-c["actions"], c.get("rank") or 0, c.get("arn") or ""))


def _services_text(services: list[dict], limit: int) -> list[str]:
    shown = [f"{s['service']} ({s['actions']:,})" for s in services[:limit]]
    return shown + ([f"+{len(services) - limit} more"] if len(services) > limit else [])


def html_section(review: dict, limit: int = 12, wrap=None) -> str:
    """The review page's section of removal candidates proven by Access Advisor (empty without its reports).

    Args:
        review: the review dict.
        limit: services shown per principal.
        wrap: escapes a name or ARN for HTML with its break points (default: :func:`miner.escape.html`).

    Returns:
        HTML (every value escaped).
    """
    from miner.escape import html

    found = review.get("removal_proven")
    if not found:
        return ""
    wrap = wrap or html
    rows = "".join(
        f'<tr><td><a href="#p-{int(c.get("rank") or 0)}" class="who">{wrap(c.get("name") or c.get("arn") or "")}</a>'
        f'<div class="sub">{wrap(c.get("arn") or "")}</div></td><td>'
        + "".join(f'<span class="tag risk">{wrap(t)}</span>' for t in _services_text(c["services"], limit))
        + f'</td><td class="num">{c["actions"]:,}</td><td>{html(str(c.get("tracking_start") or "")[:10])}</td></tr>'
        for c in found)
    return ('<h2 id="removal-proven">Removal candidates proven by IAM Access Advisor</h2><p class="lead">Granted '
            "services no request of the principal reached in Access Advisor's tracking period (up to 400 days): the "
            "strongest removal candidates this review can show (<code>miner advisor</code>).</p>"
            '<div class="tablewrap"><table id="proven"><thead><tr><th>Principal</th><th>Services never accessed '
            '(granted actions)</th><th class="num">Actions</th><th>Tracked since</th></tr></thead><tbody>'
            + rows + "</tbody></table></div>")


def html_principal(p: dict, limit: int = 15) -> str:
    """A principal's evidence block in the review page (empty without its Access Advisor report).

    Args:
        p: the principal entry.
        limit: items per list.

    Returns:
        HTML (every value escaped).
    """
    from miner.escape import html

    ev = p.get("evidence")
    if not ev:
        return ""
    c = ev.get("counts") or {}
    meta = ev.get("advisor") or {}
    out = [f"<div><h3>Evidence per granted action</h3><p class=\"sub\">CloudTrail in the window + IAM Access Advisor "
           f"(report of {html(str(meta.get('job_completed') or '')[:10])}, tracking since "
           f"{html(str(meta.get('tracking_start') or '')[:10])})</p><ul class=\"compact\">"]
    out += [f"<li>{html(LABELS[k])}: {int(c.get(k, 0)):,}</li>" for k in KINDS]
    out.append("</ul>")
    if ev.get("never_accessed_services"):
        out.append("<p>Never accessed: " + "".join(f'<span class="tag risk">{html(t)}</span>'
                                                   for t in _services_text(ev["never_accessed_services"], limit))
                   + "</p>")
    for kind in (UNUSED_PROVEN, USED_ADVISOR):
        items = ev.get(kind) or []
        if items:
            out.append(f"<p>{html(LABELS[kind])}:</p><ul class=\"compact\">" + "".join(
                f'<li><code>{html(i["action"])}</code> <span class="sub">{html(i.get("detail") or "")}</span></li>'
                for i in items[:limit]) + "</ul>")
    return "".join(out) + "</div>"


def markdown_section(review: dict, limit: int = 12) -> list[str]:
    """The review's Markdown section of removal candidates proven by Access Advisor (empty without its reports).

    Args:
        review: the review dict.
        limit: services shown per principal.

    Returns:
        Markdown lines (identifiers as code spans, prose escaped).
    """
    from miner.escape import markdown_code, markdown_text

    found = review.get("removal_proven")
    if not found:
        return []
    lines = ["## Removal candidates proven by IAM Access Advisor", "",
             markdown_text("Granted services no request of the principal reached in Access Advisor's tracking period "
                           "(up to 400 days): the strongest removal candidates this review can show."), "",
             "| Principal | Services never accessed (granted actions) | Actions | Tracked since |",
             "|---|---|---:|---|"]
    lines += [f"| {markdown_code(c.get('name') or c.get('arn') or '')} | "
              + ", ".join(markdown_code(t) for t in _services_text(c["services"], limit))
              + f" | {c['actions']:,} | {markdown_text(str(c.get('tracking_start') or '')[:10])} |" for c in found]
    return lines + [""]
