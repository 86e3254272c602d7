"""Renders a review (the dict from :mod:`miner.review`) as one self-contained HTML file, Markdown, CSV or JSON, and
as the notebooks' charts and tables."""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime, timedelta
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Iterable

from miner import evidence
from miner.escape import csv_text, json_safe, markdown_code, markdown_text
from miner.escape import html as escape

FORMATS = ("html", "md", "csv", "json")
_EXT = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json"}

#: Colours shared by the charts and the stylesheet.
USED, UNOBSERVABLE, UNUSED, GRID, INK, MUTED = "#2a9d8f", "#e9c46a", "#e76f51", "#e4e7eb", "#1f2933", "#616e7c"
_HEAT_LO, _HEAT_HI = (238, 242, 255), (30, 64, 175)

# ----------------------------------------------------------------------------------------- formats


def format_for(path: str | None, fmt: str | None = None) -> str:
    """The output format: ``fmt`` when given, else from the file extension, else ``html``.

    Args:
        path: the output path (or ``None`` for stdout).
        fmt: an explicit format (``html``, ``md``, ``csv``, ``json``; ``markdown`` is accepted).

    Returns:
        One of :data:`FORMATS`.

    Raises:
        ValueError: for an unknown format.
    """
    if fmt:
        f = fmt.lower().strip()
        f = {"markdown": "md", "htm": "html"}.get(f, f)
        if f not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        return f
    if path:
        suffix = "." + str(path).rsplit(".", 1)[-1].lower() if "." in str(path) else ""
        return _EXT.get(suffix, "html")
    return "html"


def render(review: dict, fmt: str = "html", changes: dict | None = None) -> str:
    """Render a review in one format.

    Args:
        review: the review dict (see :func:`miner.review.build_review`).
        fmt: ``html``, ``md``, ``csv`` or ``json``.
        changes: optional quarter-over-quarter changes (see :func:`miner.review.compare_reviews`).

    Returns:
        The rendered text.
    """
    fmt = format_for(None, fmt)
    if fmt == "html":
        return render_html(review, changes)
    if fmt == "md":
        return render_markdown(review, changes)
    if fmt == "csv":
        return render_csv(review)
    return render_json(review, changes)


def render_json(review: dict, changes: dict | None = None) -> str:
    """The review as JSON (the input of a later ``--compare``).

    Args:
        review: the review dict.
        changes: optional changes, stored under ``"changes"``.

    Returns:
        Indented strict JSON text (NaN and infinities as null).
    """
    doc = dict(review)
    if changes is not None:
        doc["changes"] = changes
    return json.dumps(json_safe(doc), indent=2, default=str, allow_nan=False) + "\n"


CSV_COLUMNS = [
    "rank", "score", "arn", "name", "kind", "account", "events", "authorised", "denied", "first_seen", "last_seen",
    "never_used", "in_iam", "granted_actions", "used_actions", "unused_actions", "unobservable_actions",
    "unused_services", "high_risk_unused", "high_risk_used_broadly", "suggested_actions", "policies",
    "blocked_by_org", "org_blocked_calls",
    # IAM Access Advisor's evidence (`miner advisor`), blank for a principal it has no report on
    "advisor_used_only", "advisor_unused_proven", "advisor_never_accessed_services",
]


def render_csv(review: dict) -> str:
    """One row per principal, in rank order (lists joined with ``;``).

    Args:
        review: the review dict.

    Returns:
        CSV text with a header row; every cell quoted, formulas neutralised (:func:`escape.csv_text`).
    """
    rows = []
    for p in review.get("principals", []):
        g = p.get("granted") or {}
        rows.append([
            p.get("rank"), _num(p.get("score")), p.get("arn"), p.get("name"), p.get("kind"), p.get("account"),
            p.get("events", 0), p.get("authorised", 0), p.get("denied", 0), p.get("first_seen") or "",
            p.get("last_seen") or "", str(bool(p.get("never_used"))).lower(), _tri(p.get("in_iam")),
            _blank(g.get("actions")), len(p.get("used_actions") or []), _blank(p.get("unused_count")),
            _blank(p.get("unobservable_count")), ";".join(p.get("unused_services") or []),
            ";".join(_finding_name(h) for h in p.get("high_risk_unused") or []),
            ";".join(_finding_name(h) for h in p.get("high_risk_used_broadly") or []),
            _blank(p.get("suggested_actions")), ";".join(g.get("policies") or []),
            _blank(p.get("blocked_count")),
            ";".join(f"{c['action']} on {c['resource']} ({c['kind']} {c['policy']})" for c in _org_errors(p)),
            *_evidence_cells(p.get("evidence")),
        ])
    return csv_text(CSV_COLUMNS, rows)


def _evidence_cells(ev: dict | None) -> list[str]:
    """The CSV's Access Advisor cells of one principal: granted actions used in Access Advisor's eyes only, unused
    and proven so, and the services it saw no request to; blank without a report."""
    if not ev:
        return ["", "", ""]
    counts = ev.get("counts") or {}
    return [str(counts.get("used_advisor", 0)), str(counts.get("unused_proven", 0)),
            ";".join(n["service"] for n in ev.get("never_accessed_services") or [])]


def _num(x: Any) -> str:
    return "" if x is None else (f"{x:.1f}" if isinstance(x, float) else str(x))


def _blank(x: Any) -> str:
    return "" if x is None else str(x)


def _tri(x: Any) -> str:
    return "" if x is None else str(bool(x)).lower()


# ----------------------------------------------------------------------------------------- small helpers


def compact(n: int | float | None) -> str:
    """A short human number: ``950``, ``1.2k``, ``34k``, ``1.5M``.

    Args:
        n: a count (``None`` renders as an en dash).

    Returns:
        The text.
    """
    if n is None:
        return "\u2013"
    n = float(n)
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.1f}{suf}" if v < 10 else f"{v:.0f}{suf}"
    return f"{n:.0f}"


def number(n: int | float | None) -> str:
    """A count as the reports show it: thousands separators, no decimals (``22,321``); ``None`` as an en dash.

    Args:
        n: the count.

    Returns:
        The text.
    """
    return "\u2013" if n is None else f"{n:,.0f}"


def _fit(n: int, width: float, char_w: float) -> str:
    """``n`` in full when it fits ``width`` px at ``char_w`` px a character, else :func:`compact` (heatmap cells)."""
    full = number(n)
    return full if len(full) * char_w <= width else compact(n)


def _day(x: Any) -> date | None:
    if x is None or x == "":
        return None
    if isinstance(x, datetime):
        return x.date()
    if isinstance(x, date):
        return x
    return date.fromisoformat(str(x)[:10])


def _date(x: Any) -> str:
    """A date or timestamp as ``YYYY-MM-DD`` (the one date format of the reports); ``""`` when missing."""
    d = _day(x)
    return d.isoformat() if d else ""


#: Where a long name or ARN may wrap: after a separator, or between the words of a CamelCase name.
_BREAK = re.compile(r"(?<=[/:_.@,=+])|(?<=[a-z])(?=[A-Z])")


def breakable(text: Any) -> str:
    """A logged name or ARN as HTML text that wraps only between words: escaped, with ``<wbr>`` after each
    separator (``/ : _ . @ , = +``) and between the words of a CamelCase name, never inside a word.

    Args:
        text: the value (``str()`` is applied).

    Returns:
        HTML source.
    """
    return "<wbr>".join(escape(part) for part in _BREAK.split(str(text)))


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _mix(lo: tuple[int, int, int], hi: tuple[int, int, int], t: float) -> str:
    t = max(0.0, min(1.0, t))
    r, g, b = (round(a + (c - a) * t) for a, c in zip(lo, hi))
    return f"#{r:02x}{g:02x}{b:02x}"


def _svg(width: int, height: int, body: Iterable[str], label: str) -> str:
    return (f'<svg viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px" role="img" '
            f'aria-label="{escape(label)}" preserveAspectRatio="xMinYMin meet">' + "".join(body) + "</svg>")


_NUM = ' class="num"'  # marks the chart texts that hold numbers (the browser check reads them)


def _text(x: float, y: float, s: str, size: int = 11, anchor: str = "start", fill: str = INK, extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"{extra}>'
            f"{escape(s)}</text>")


# ----------------------------------------------------------------------------------------- charts


def svg_sparkline(counts: list[int], width: int = 120, height: int = 22) -> str:
    """A tiny bar sparkline of daily counts (for table cells).

    Args:
        counts: one value per day, oldest first.
        width: pixel width.
        height: pixel height.

    Returns:
        An inline ``<svg>`` element.
    """
    if not counts:
        return ""
    peak = max(counts) or 1
    bw = width / len(counts)
    parts = [f'<rect x="0" y="{height - 1}" width="{width}" height="1" fill="{GRID}"/>']
    for i, c in enumerate(counts):
        if c:
            h = max(1.5, (height - 2) * c / peak)
            parts.append(f'<rect x="{i * bw:.2f}" y="{height - 1 - h:.2f}" width="{max(bw - 0.3, 0.6):.2f}" '
                         f'height="{h:.2f}" fill="{USED}"/>')
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="daily activity">' + "".join(parts) + "</svg>")


def daily_counts(activity: Iterable, since: date, until: date) -> list[int]:
    """Dense daily counts over ``[since, until)`` from sparse ``(day, count)`` pairs.

    Args:
        activity: pairs of (ISO date or date, count); days outside the window are ignored.
        since: first day.
        until: day after the last one.

    Returns:
        One count per day.
    """
    n = max(1, (until - since).days)
    out = [0] * n
    for d, c in activity or []:
        i = (_day(d) - since).days
        if 0 <= i < n:
            out[i] += int(c)
    return out


def svg_activity(rows: list[tuple[str, list[int]]], since: date, width: int = 1180, label_w: int = 260) -> str:
    """Small multiples of activity over time: one row of daily bars per principal, each scaled to its own peak.

    Args:
        rows: (label, dense daily counts) in display order; all count lists have the same length.
        since: the first day (for month ticks).
        width: chart width in px.
        label_w: width of the label column.

    Returns:
        An inline ``<svg>`` element.
    """
    if not rows:
        return ""
    days = len(rows[0][1])
    row_h, top, right = 24, 22, 70
    plot_w = width - label_w - right
    height = top + row_h * len(rows) + 8
    bw = plot_w / days
    parts: list[str] = []
    ticks = [i for i in range(days) if i == 0 or (since + timedelta(days=i)).day == 1]  # first day, months
    for k, i in enumerate(ticks):
        x = label_w + i * bw
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 8}" stroke="{GRID}"/>')
        if k + 1 == len(ticks) or (ticks[k + 1] - i) * bw >= 62:  # a date label is ~56 px wide
            parts.append(_text(x + 3, top - 8, (since + timedelta(days=i)).isoformat(), 10, fill=MUTED))
    for r, (label, counts) in enumerate(rows):
        y0 = top + r * row_h
        peak = max(counts) if counts else 0
        total = sum(counts)
        if r % 2 == 0:
            parts.append(f'<rect x="0" y="{y0}" width="{width}" height="{row_h}" fill="#f8fafc"/>')
        parts.append(_text(label_w - 8, y0 + row_h / 2 + 4, _short(label, 38), 11, "end",
                           extra=f' data-principal="{escape(label)}"'))
        base = y0 + row_h - 4
        parts.append(f'<line x1="{label_w}" y1="{base}" x2="{label_w + plot_w}" y2="{base}" stroke="{GRID}"/>')
        if peak:
            for i, c in enumerate(counts):
                if c:
                    h = max(1.5, (row_h - 8) * c / peak)
                    day = since + timedelta(days=i)
                    parts.append(f'<rect x="{label_w + i * bw:.2f}" y="{base - h:.2f}" width="{max(bw - 0.6, 0.8):.2f}" '
                                 f'height="{h:.2f}" fill="{USED}"><title>{escape(label)} {day.isoformat()}: {number(c)} events'
                                 f'</title></rect>')
            parts.append(_text(label_w + plot_w + 6, y0 + row_h / 2 + 4, number(total), 11, fill=MUTED, extra=_NUM))
        else:
            parts.append(_text(label_w + 6, y0 + row_h / 2 + 4, "no activity in the window", 11, fill=UNUSED))
    return _svg(width, height, parts, "activity over time per principal")


def svg_heatmap(principals: list[str], services: list[str], counts: dict[tuple[str, str], int],
                width: int = 1180, label_w: int = 260) -> str:
    """Service usage by principal: a heatmap of call counts (log colour scale).

    Args:
        principals: row labels, in display order.
        services: column labels (IAM service prefixes), in display order.
        counts: (principal, service) -> authorised calls.
        width: chart width in px (cells shrink to fit, at most 34 px).
        label_w: width of the row-label column.

    Returns:
        An inline ``<svg>`` element.
    """
    if not principals or not services:
        return ""
    cell = max(12.0, min(34.0, (width - label_w - 20) / len(services)))
    top = 96
    height = int(top + cell * len(principals) + 30)
    width = int(label_w + cell * len(services) + 20)
    peak = max(counts.values() or [1])
    lpeak = math.log1p(peak)
    parts: list[str] = []
    for j, s in enumerate(services):
        x = label_w + j * cell + cell / 2
        parts.append(_text(x, top - 6, _short(s, 18), 11, extra=f' transform="rotate(-50 {x:.1f} {top - 6})"'))
    for i, p in enumerate(principals):
        y = top + i * cell
        parts.append(_text(label_w - 8, y + cell / 2 + 4, _short(p, 38), 11, "end"))
        for j, s in enumerate(services):
            c = counts.get((p, s), 0)
            x = label_w + j * cell
            if c:
                t = math.log1p(c) / lpeak if lpeak else 1
                fill = _mix(_HEAT_LO, _HEAT_HI, 0.12 + 0.88 * t)
                parts.append(f'<rect x="{x + 1:.1f}" y="{y + 1:.1f}" width="{cell - 2:.1f}" height="{cell - 2:.1f}" '
                             f'rx="3" fill="{fill}"><title>{escape(p)} \u00b7 {escape(s)}: {number(c)} calls</title></rect>')
                if cell >= 24:
                    parts.append(_text(x + cell / 2, y + cell / 2 + 3.5, _fit(c, cell - 4, 5.2), 9, "middle",
                                       "#ffffff" if t > 0.55 else INK, _NUM))
            else:
                parts.append(f'<rect x="{x + 1:.1f}" y="{y + 1:.1f}" width="{cell - 2:.1f}" height="{cell - 2:.1f}" '
                             f'rx="3" fill="#f8fafc" stroke="{GRID}" stroke-width="0.6"/>')
    # legend
    ly = height - 14
    parts.append(_text(label_w, ly + 4, "fewer calls", 10, fill=MUTED))
    for k in range(8):
        parts.append(f'<rect x="{label_w + 62 + k * 14}" y="{ly - 6}" width="14" height="10" '
                     f'fill="{_mix(_HEAT_LO, _HEAT_HI, 0.12 + 0.88 * k / 7)}"/>')
    parts.append(_text(label_w + 62 + 8 * 14 + 6, ly + 4, f"more (peak {number(peak)}, log scale)", 10, fill=MUTED,
                       extra=_NUM))
    return _svg(width, height, parts, "service usage by principal")


def svg_granted_vs_used(rows: list[tuple[str, int, int, int]], width: int = 1180, label_w: int = 260) -> str:
    """Granted vs used: one 100% bar per principal split into used, unobservable and unused granted actions.

    Args:
        rows: (label, used, unobservable, unused) granted-action counts, in display order.
        width: chart width in px.
        label_w: width of the label column.

    Returns:
        An inline ``<svg>`` element.
    """
    if not rows:
        return ""
    row_h, top, right = 24, 30, 190
    plot_w = width - label_w - right
    height = top + row_h * len(rows) + 6
    parts: list[str] = []
    lx = label_w
    for name, colour in (("used", USED), ("unobservable (not logged)", UNOBSERVABLE), ("unused", UNUSED)):
        parts.append(f'<rect x="{lx}" y="6" width="12" height="12" rx="2" fill="{colour}"/>')
        parts.append(_text(lx + 16, 16, name, 11, fill=MUTED))
        lx += 30 + 7 * len(name)
    for r, (label, used, unobs, unused) in enumerate(rows):
        y = top + r * row_h
        total = used + unobs + unused
        parts.append(_text(label_w - 8, y + row_h / 2 + 4, _short(label, 38), 11, "end"))
        if total <= 0:
            parts.append(_text(label_w + 4, y + row_h / 2 + 4, "no grants", 11, fill=MUTED))
            continue
        x = float(label_w)
        for n, colour, what in ((used, USED, "used"), (unobs, UNOBSERVABLE, "unobservable"), (unused, UNUSED, "unused")):
            if n:
                w = max(1.0, plot_w * n / total)
                parts.append(f'<rect x="{x:.2f}" y="{y + 4}" width="{w:.2f}" height="{row_h - 8}" fill="{colour}">'
                             f'<title>{escape(label)}: {number(n)} {what} of {number(total)} granted</title></rect>')
                x += w
        pct = 100.0 * used / total
        parts.append(_text(label_w + plot_w + 8, y + row_h / 2 + 4,
                           f"{number(used)} of {number(total)} used ({pct:.0f}%)", 11, fill=INK, extra=_NUM))
    return _svg(width, height, parts, "granted versus used actions per principal")


# ----------------------------------------------------------------------------------------- HTML


def _template(name: str) -> str:
    return (resources.files("miner") / "templates" / name).read_text(encoding="utf-8")


def _window_days(review: dict) -> tuple[date, date]:
    return _days_of(review.get("window") or {})


def _days_of(w: dict) -> tuple[date, date]:
    """A review window (``since``/``until`` ISO times) as whole days: first day, day after the last."""
    since = _day(w.get("since")) or date.today()
    until_dt = w.get("until")
    until = _day(until_dt) or since + timedelta(days=1)
    if until_dt and str(until_dt)[11:19] not in ("", "00:00:00"):
        until = until + timedelta(days=1)  # a partial last day still gets its bar
    return since, max(until, since + timedelta(days=1))


def window_span(window: dict | None) -> str:
    """A review window as whole days, last day inclusive: ``2026-08-01 \u2192 2026-09-14`` (how reports name a review).

    Args:
        window: a review's ``window`` (``since`` and ``until`` ISO times); ``None`` when unknown.

    Returns:
        The text (``?`` for an unknown window).
    """
    try:
        since, until = _days_of(window) if (window or {}).get("since") else (None, None)
    except (TypeError, ValueError):  # a hand-edited previous review
        since = None
    if since is None:
        return "?"
    return f"{since.isoformat()} \u2192 {(until - timedelta(days=1)).isoformat()}"


def _label(p: dict) -> str:
    return p.get("display") or p.get("name") or p.get("arn") or "?"


def _rule(h: dict) -> str:
    return str(h.get("rule") or h.get("action") or "?")


#: How each status of a high-risk finding reads in the reports.
FINDING_STATUS = {"unused": "unused", "used_broadly": "used, granted more broadly",
                  "unobservable": "CloudTrail could not have seen it used"}


def _where(h: dict) -> str:
    """The policy (managed ARN or inline name) and statement (Sid, else position) of a finding; empty if unknown."""
    if not h.get("policy"):
        return ""
    return f"{h['policy']} statement {h.get('sid') or '#' + str(h.get('statement') or '?')}"


def _finding_name(h: dict) -> str:
    """A finding in one cell: the rule, then where it is granted."""
    where = _where(h)
    return _rule(h) + (f" ({where})" if where else "")


def _actionable(p: dict) -> list[dict]:
    """The high-risk findings a reviewer acts on: unused, then used far more broadly than granted."""
    return (p.get("high_risk_unused") or []) + (p.get("high_risk_used_broadly") or [])


def _org_blocked(p: dict) -> list[dict]:
    """The groups of a principal's granted actions that SCPs or RCPs block (one per denying statement)."""
    return (p.get("organizations") or {}).get("blocked") or []


def _org_errors(p: dict) -> list[dict]:
    """A principal's authorised calls that an SCP or RCP denies: errors (the calls should not exist)."""
    return (p.get("organizations") or {}).get("blocked_calls") or []


#: The lead of the reports' section on SCPs and RCPs.
ORG_LEAD = ("Granted actions that an SCP or RCP of the organization denies (an unconditional Deny, or a level of "
            "the organization without an Allow): they cannot be used, so they are not counted as unused nor as "
            "high-risk grants. Denies under a Condition are not counted as blocks.")
ORG_ERROR_LEAD = ("Authorised calls that an SCP or RCP denies: they should not exist. A policy changed during the "
                  "window, or the organization snapshot is not the one in force.")


def _tags(items: Iterable[str], cls: str = "", limit: int = 12) -> str:
    items = list(items)
    out = "".join(f'<span class="tag {cls}">{breakable(i)}</span>' for i in items[:limit])
    if len(items) > limit:
        out += f'<span class="tag">+{number(len(items) - limit)} more</span>'
    return out


def _when(x: Any) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM UTC`` (unparseable text is returned as is)."""
    if not x:
        return "?"
    try:
        t = datetime.fromisoformat(str(x).replace("Z", "+00:00"))
    except ValueError:
        return str(x)
    return t.strftime("%Y-%m-%d %H:%M UTC") if t.tzinfo is None or t.utcoffset() == timedelta(0) else t.isoformat()


def _meta_rows(review: dict) -> list[tuple[str, str]]:
    w = review.get("window") or {}
    iam = review.get("iam_source") or "none: grants unknown (usage only)"
    days = w.get("days")
    days_txt = f"{days:g} days" if isinstance(days, (int, float)) else "? days"
    return [
        ("Window", f"{_when(w.get('since'))} \u2192 {_when(w.get('until'))} ({days_txt})"),
        ("Store", str(review.get("store", "?"))),
        ("IAM source", str(iam)),
        ("Catalogue", str(review.get("catalog_version", "?"))),
        ("Mapping", str(review.get("mapping_version", "?"))),
        ("Generated", f"{_when(review.get('generated_at'))} by miner {review.get('miner_version', '?')}"),
    ]


def _cards(review: dict) -> str:
    s = review.get("summary") or {}
    known = review.get("grants_known")
    cards = [
        ("", s.get("principals", 0), "principals reviewed"),
        ("", s.get("active", 0), "active in the window"),
        ("warn", s.get("never_used", 0), "never used (removal candidates)" if known else "idle (no events)"),
    ]
    if known:
        cards += [
            ("warn", s.get("unused_actions", 0), "unused granted actions"),
            ("risk", s.get("high_risk", s.get("high_risk_unused", 0)), "high-risk grants (unused or too broad)"),
        ]
    cards.append(("risk", s.get("denied", 0), "denied attempts"))
    return '<section class="cards">' + "".join(  # a zero is not a warning
        f'<div class="card {c if n else ""}"><div class="n">{number(n)}</div><div class="l">{escape(l)}</div></div>'
        for c, n, l in cards) + "</section>"


def _unused_services(p: dict, limit: int = 4) -> str:
    """The unused-services cell: riskiest first (the review's order), those a high-risk rule names in red."""
    from miner.review import finding_services

    services = list(p.get("unused_services") or [])
    named = finding_services(_actionable(p) + (p.get("high_risk_unobservable") or []))
    counts = p.get("unused_by_service") or {}
    out = "".join(
        f'<span class="tag{" risk" if s in named else ""}" title="{number(counts.get(s))} unused actions'
        f'{"; named by a high-risk grant" if s in named else ""}">{breakable(s)}</span>' for s in services[:limit])
    if len(services) > limit:
        out += f'<span class="tag">+{number(len(services) - limit)} more</span>'
    return out


def _ranked_table(review: dict, since: date, until: date) -> str:
    known = review.get("grants_known")
    head = ["#", "Principal", "Score", "Granted", "Used", "Unused", "High-risk", "Unused services", "Activity",
            "Denied"]
    if not known:
        head = ["#", "Principal", "Events", "Used actions", "Services", "Activity", "Denied"]
    rows = []
    for p in review.get("principals", []):
        g = p.get("granted") or {}
        who = (f'<a href="#p-{p.get("rank")}" class="who">{breakable(_label(p))}</a>'
               f'<div class="sub">{breakable(p.get("arn") or "")}</div>')
        flags = []
        if p.get("never_used"):
            flags.append('<span class="tag idle">never used</span>')
        if p.get("in_iam") is False:
            flags.append('<span class="tag gone">not in IAM</span>')
        who += "".join(flags)
        spark = svg_sparkline(daily_counts(p.get("activity"), since, until), width=100)
        if not p.get("last_seen"):
            seen = '<span class="tag idle">never</span>'
        elif known:
            seen = f'<div class="sub">last {_date(p["last_seen"])}</div>'
        else:
            seen = f'<div class="sub">{_date(p.get("first_seen"))} \u2192 {_date(p["last_seen"])}</div>'
        activity = f'<td class="activity">{spark}{seen}</td>'
        denied = p.get("denied", 0)
        if known:
            cells = [
                f'<td class="num">{p.get("rank")}</td>', f'<td class="principal">{who}</td>',
                f'<td class="num">{number(p.get("score"))}</td>',
                f'<td class="num">{number(g.get("actions"))}</td>',
                f'<td class="num">{number(len(p.get("used_actions") or []))}</td>',
                f'<td class="num">{number(p.get("unused_count"))}</td>',
                f'<td>{_tags([_rule(h) for h in _actionable(p)], "risk", 3)}</td>',
                f"<td>{_unused_services(p)}</td>", activity, f'<td class="num">{number(denied) if denied else ""}</td>',
            ]
        else:
            cells = [
                f'<td class="num">{p.get("rank")}</td>', f'<td class="principal">{who}</td>',
                f'<td class="num">{number(p.get("events", 0))}</td>',
                f'<td class="num">{number(len(p.get("used_actions") or []))}</td>',
                f'<td>{_tags(p.get("services_used") or [], "", 6)}</td>', activity,
                f'<td class="num">{number(denied) if denied else ""}</td>',
            ]
        cls = ' class="never"' if p.get("never_used") else ""
        rows.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    ths = "".join(f'<th class="num">{h}</th>' if h in ("#", "Score", "Granted", "Used", "Unused", "Denied", "Events",
                                                      "Used actions") else f"<th>{h}</th>" for h in head)
    return (f'<div class="tablewrap"><table id="ranked"><thead><tr>{ths}</tr></thead><tbody>' + "".join(rows)
            + "</tbody></table></div>")


def previous_review_label(changes: dict) -> str:
    """The review a comparison was made with, named by its window: ``the review of 2026-05-01 \u2192 2026-07-30``.

    Args:
        changes: from :func:`miner.review.compare_reviews`.

    Returns:
        The text (plain; escape it for where it lands).
    """
    return f"the review of {window_span((changes.get('previous') or {}).get('window'))}"


def _changes_html(changes: dict) -> str:
    prev = changes.get("previous") or {}
    s = changes.get("summary") or {}
    out = [f'<p class="lead">Compared with {escape(previous_review_label(changes))} (generated '
           f'{escape(_when(prev.get("generated_at")))}).</p>']
    out += [f'<div class="note">{escape(n)}</div>' for n in changes.get("notes") or []]
    out.append('<section class="cards">' + "".join(
        f'<div class="card"><div class="n">{number(s.get(k, 0))}</div><div class="l">{escape(l)}</div></div>'
        for k, l in (("new_principals", "new principals"), ("gone_principals", "gone principals"),
                     ("grants_added", "grants added"), ("grants_removed", "grants removed"),
                     ("usage_appeared", "actions newly used"), ("usage_stopped", "actions no longer used"))) +
        "</section>")
    if changes.get("new_principals"):
        out.append("<h3>New principals</h3><p>" + _tags(changes["new_principals"], "new", 50) + "</p>")
    if changes.get("gone_principals"):
        out.append("<h3>Gone principals</h3><p>" + _tags(changes["gone_principals"], "gone", 50) + "</p>")
    rows = []
    for c in changes.get("changed") or []:
        def cell(key: str, cls: str = "") -> str:
            return f"<td>{_tags(c.get(key) or [], cls, 8)}</td>"
        status = c.get("status_change") or ""
        rows.append(f'<tr><td><span class="who">{breakable(c.get("name") or c["arn"])}</span>'
                    f'<div class="sub">{breakable(c["arn"])}</div>{_tags([status], "idle") if status else ""}</td>'
                    + cell("grants_added", "risk") + cell("grants_removed", "new")
                    + cell("usage_appeared", "new") + cell("usage_stopped", "idle") + "</tr>")
    if rows:
        out.append('<h3>Changed principals</h3><table id="changes"><thead><tr><th>Principal</th><th>Grants added</th>'
                   "<th>Grants removed</th><th>Usage appeared</th><th>Usage stopped</th></tr></thead><tbody>"
                   + "".join(rows) + "</tbody></table>")
    elif not changes.get("new_principals") and not changes.get("gone_principals"):
        out.append("<p>No changes.</p>")
    return "".join(out)


def _json_pre(doc: Any) -> str:
    """A policy document as indented JSON in ``<pre>`` (line by line, as :func:`escape` keeps no line break)."""
    return "<pre>" + "\n".join(escape(line) for line in json.dumps(doc, indent=2).splitlines()) + "</pre>"


def _principal_details(p: dict, known: bool) -> str:
    g = p.get("granted") or {}
    head = (f'<summary><b>#{p.get("rank")} {breakable(_label(p))}</b><span class="sub">{breakable(p.get("arn") or "")}'
            f'</span><span class="sub">{number(p.get("events", 0))} events, {number(len(p.get("used_actions") or []))} '
            "actions used" + (f', {number(g.get("actions"))} granted, {number(p.get("unused_count"))} unused'
                              if known and g.get("known") else "") + "</span></summary>")
    cols = []
    if p.get("used_actions"):
        cols.append("<div><h3>Used actions</h3>" + _tags(p["used_actions"], "", 60) + "</div>")
    if known and g.get("known"):
        if p.get("unused_by_service"):
            items = sorted(p["unused_by_service"].items(), key=lambda kv: (-kv[1], kv[0]))
            cols.append("<div><h3>Unused grants by service</h3><ul class=\"compact\">" + "".join(
                f"<li><code>{escape(s)}</code>: {number(n)} action{'s' if n != 1 else ''}</li>" for s, n in items[:25])
                + (f"<li>\u2026 {len(items) - 25} more services</li>" if len(items) > 25 else "") + "</ul></div>")
        for key, title in (("high_risk_unused", "High-risk unused grants"),
                           ("high_risk_used_broadly", "High-risk grants used, but on fewer resources than granted"),
                           ("high_risk_unobservable", "High-risk grants CloudTrail could not have seen used")):
            hs = p.get(key) or []
            if hs:
                cols.append(f"<div><h3>{title}</h3><ul class=\"compact\">" + "".join(
                    f"<li><code>{escape(_rule(h))}</code>"
                    + (f' <span class="sub">{breakable(_where(h))}</span>' if _where(h) else "")
                    + f" \u2014 {escape(str(h.get('reason') or ''))}"
                    + (f'<div class="sub">remedy: {escape(h["remedy"])}</div>' if h.get("remedy") else "") + "</li>"
                    for h in hs[:15]) + (f"<li>\u2026 {len(hs) - 15} more</li>" if len(hs) > 15 else "") + "</ul></div>")
        if g.get("policies"):
            cols.append("<div><h3>Attached policies</h3>" + _tags(g["policies"], "", 30) + "</div>")
        if p.get("unobservable_count"):
            n = p["unobservable_count"]
            listed = p.get("unobservable") or []
            block = (f"<div><h3>Unobservable</h3><p>{number(n)} granted action{'s' if n != 1 else ''} CloudTrail could not "
                     "have logged here (data events not recorded by this trail, or never logged): not counted as "
                     "unused.</p>")
            if listed:
                block += '<ul class="compact">' + "".join(
                    f'<li><code>{escape(u.get("action", ""))}</code> <span class="sub">{escape(u.get("reason") or "")}'
                    "</span></li>" for u in listed) + "</ul>"
                if n > len(listed):
                    block += f'<p class="sub">\u2026 and {number(n - len(listed))} more</p>'
            cols.append(block + "</div>")
        if p.get("evidence"):
            cols.append(evidence.html_principal(p))
        if p.get("used_not_granted"):
            cols.append("<div><h3>Used but not granted</h3>" + _tags(p["used_not_granted"], "idle", 30) + "</div>")
        if _org_blocked(p):
            cols.append("<div><h3>Blocked by SCP or RCP</h3><ul class=\"compact\">" + "".join(
                f"<li><code>{breakable(b['policy'])}</code> <span class=\"sub\">{escape(b['kind'])} at "
                f"{breakable(b['target'])}</span>: {number(b['count'])} action"
                f"{'s' if b['count'] != 1 else ''}" + _tags(b["actions"], "", 6) + "</li>"
                for b in _org_blocked(p)[:10]) + "</ul></div>")
    if p.get("denied_attempts"):
        cols.append("<div><h3>Denied attempts</h3><ul class=\"compact\">" + "".join(
            f"<li><code>{escape(d.get('action') or d.get('event') or '?')}</code> \u00d7{number(d.get('count', 1))}"
            f" <span class=\"sub\">{escape(str(d.get('error_code') or ''))} last {_date(d.get('last_seen'))}"
            "</span></li>" for d in p["denied_attempts"][:30]) + "</ul></div>")
    body = '<div class="cols">' + "".join(cols) + "</div>" if cols else ""
    pol = p.get("suggested_policy")
    if pol:
        docs = pol if isinstance(pol, list) else [pol]
        body += "".join(f"<h3>Suggested policy{f' {i + 1} of {len(docs)}' if len(docs) > 1 else ''}</h3>"
                        + _json_pre(d) for i, d in enumerate(docs))
    elif p.get("never_used"):
        body += "<p>No activity in the window: nothing to suggest; consider removing this principal.</p>"
    if p.get("suggest_error"):
        body += f'<p class="note">No suggested policy: {escape(p["suggest_error"])}</p>'
    return f'<details class="p" id="p-{p.get("rank")}">{head}<div>{body}</div></details>'


def _by_events(review: dict, limit: int) -> list[dict]:
    return sorted(review.get("principals", []), key=lambda p: (-p.get("events", 0), _label(p)))[:limit]


def activity_chart(review: dict, max_rows: int = 40) -> str:
    """The "activity over time" figure of a review (busiest principals first).

    Args:
        review: the review dict.
        max_rows: at most this many principals.

    Returns:
        A ``<figure>`` with an inline SVG, or ``""`` when there is nothing to draw.
    """
    since, until = _window_days(review)
    rows = [(_label(p), daily_counts(p.get("activity"), since, until)) for p in _by_events(review, max_rows)]
    if not rows:
        return ""
    return ('<figure id="chart-activity"><figcaption>Activity over time<span>daily events per principal, each row '
            "scaled to its own peak; total on the right</span></figcaption>" + svg_activity(rows, since) + "</figure>")


def heatmap_chart(review: dict, max_rows: int = 40, max_services: int = 32) -> str:
    """The "service usage by principal" heatmap figure of a review.

    Args:
        review: the review dict.
        max_rows: at most this many principals (busiest first).
        max_services: at most this many services (most called first).

    Returns:
        A ``<figure>`` with an inline SVG, or ``""`` when no principal made an authorised call.
    """
    rows = [p for p in _by_events(review, max_rows) if p.get("service_calls")]
    totals: dict[str, int] = {}
    for p in rows:
        for svc, c in p["service_calls"].items():
            totals[svc] = totals.get(svc, 0) + int(c)
    services = [svc for svc, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))][:max_services]
    if not rows or not services:
        return ""
    counts = {(_label(p), svc): int(c) for p in rows for svc, c in p["service_calls"].items()}
    return ('<figure id="chart-heatmap"><figcaption>Service usage by principal<span>authorised calls per IAM service; '
            "hover a cell for the count</span></figcaption>" + svg_heatmap([_label(p) for p in rows], services, counts)
            + "</figure>")


def grants_chart(review: dict, max_rows: int = 40) -> str:
    """The "granted vs used" figure of a review (rank order); empty when grants are unknown.

    Args:
        review: the review dict.
        max_rows: at most this many principals.

    Returns:
        A ``<figure>`` with an inline SVG, or ``""``.
    """
    rows = []
    for p in review.get("principals", [])[:max_rows]:
        if not (p.get("granted") or {}).get("known"):
            continue
        used = p.get("used_granted")
        rows.append((_label(p), len(used) if used is not None else len(p.get("used_actions") or []),
                     int(p.get("unobservable_count") or 0), int(p.get("unused_count") or 0)))
    if not rows:
        return ""
    return ('<figure id="chart-grants"><figcaption>Granted vs used<span>granted actions per principal, in rank order'
            "</span></figcaption>" + svg_granted_vs_used(rows) + "</figure>")


def _org_html(principals: list[dict]) -> list[str]:
    """The HTML sections on SCPs and RCPs: calls they deny (errors), then the grants they block."""
    out = []
    errors = [(p, c) for p in principals for c in _org_errors(p)]
    if errors:
        out.append('<h2 id="org-errors">Calls an SCP or RCP denies (errors)</h2><p class="lead">'
                   f"{escape(ORG_ERROR_LEAD)}</p><table id=\"org-errors-table\"><thead><tr><th>Principal</th>"
                   "<th>Action</th><th>Resource</th><th class=\"num\">Calls</th><th>Denied by</th></tr></thead><tbody>"
                   + "".join(f"<tr><td>{breakable(_label(p))}</td><td><code>{breakable(c['action'])}</code></td>"
                             f"<td><code>{breakable(c['resource'])}</code></td><td class=\"num\">{number(c['calls'])}"
                             f"</td><td>{escape(c['kind'])} <code>{breakable(c['policy'])}</code> "
                             f"<span class=\"sub\">{breakable(c['target'])}, statement {escape(c['statement'])}"
                             "</span></td></tr>" for p, c in errors[:200]) + "</tbody></table>")
    blocked = [(p, b) for p in principals for b in _org_blocked(p)]
    if blocked:
        out.append('<h2 id="org-blocked">Blocked by SCP or RCP</h2><p class="lead">'
                   f"{escape(ORG_LEAD)}</p><table id=\"org-blocked-table\"><thead><tr><th>Principal</th>"
                   "<th>Policy</th><th>Attached to</th><th class=\"num\">Actions</th><th>Examples</th></tr></thead>"
                   "<tbody>" + "".join(
                       f"<tr><td>{breakable(_label(p))}</td><td>{escape(b['kind'])} <code>{breakable(b['policy'])}"
                       f"</code></td><td>{breakable(b['target'])}</td><td class=\"num\">{number(b['count'])}"
                       f"</td><td>{_tags(b['actions'], '', 4)}</td></tr>" for p, b in blocked[:200])
                   + "</tbody></table>")
    return out


def render_html(review: dict, changes: dict | None = None, max_chart_rows: int = 40) -> str:
    """The review as ONE self-contained HTML page (inline CSS and SVG; no scripts, fonts or external requests).

    Args:
        review: the review dict.
        changes: optional quarter-over-quarter changes.
        max_chart_rows: at most this many principals in each chart (the table always lists all).

    Returns:
        The HTML text.
    """
    known = bool(review.get("grants_known"))
    since, until = _window_days(review)
    principals = review.get("principals", [])
    meta = "".join(f"<dt>{escape(k)}</dt><dd>{breakable(v)}</dd>" for k, v in _meta_rows(review))
    sections: list[str] = [_cards(review)]
    if not known:
        sections.append('<div class="note"><b>Grants unknown.</b> No IAM snapshot or live IAM was given, so this '
                        "review shows usage only: it cannot say what is granted but unused. Re-run with "
                        "<code>--iam-snapshot FILE|DIR</code> or <code>--profile</code>.</div>")
    for note in review.get("notes") or []:
        sections.append(f'<div class="note">{escape(note)}</div>')
    if changes:
        sections.append(f'<h2 id="changes-since">Changes since {escape(previous_review_label(changes))}</h2>'
                        + _changes_html(changes))
    sections.append(('<h2 id="ranking">Principals ranked by unused privilege and risk</h2>' if known else
                     '<h2 id="ranking">Principals ranked by idleness (grants unknown)</h2>')
                    + ('<p class="lead">Score = unused granted actions weighted by access level (permissions '
                       "management 5, write/tagging 2, read/list 1) + 100 per high-risk grant (a statement unused, or used on "
                       "fewer resources than it grants); principals with "
                       "no events in the window are removal candidates.</p>" if known else
                       '<p class="lead">Grants unknown: ranked by idleness (never used first, then oldest last '
                       "activity).</p>")
                    + _ranked_table(review, since, until))
    charts = [c for c in (activity_chart(review, max_chart_rows), heatmap_chart(review, max_chart_rows),
                          grants_chart(review, max_chart_rows)) if c]
    if charts:
        sections.append('<h2 id="charts">At a glance</h2><div class="charts">' + "".join(charts) + "</div>")

    sections.append(evidence.html_section(review, wrap=breakable))  # Access Advisor's proof (or nothing)
    never = [p for p in principals if p.get("never_used")]
    if never:
        sections.append('<h2 id="removal">Removal candidates: no activity in the window</h2><table id="never"><thead>'
                        "<tr><th>Principal</th><th>Account</th><th class=\"num\">Granted</th><th>IAM last used</th>"
                        "<th>Created</th></tr></thead><tbody>" + "".join(
                            f'<tr><td><span class="who">{breakable(_label(p))}</span><div class="sub">'
                            f'{breakable(p["arn"])}</div></td><td>{escape(p.get("account") or "")}</td>'
                            f'<td class="num">{number((p.get("granted") or {}).get("actions"))}</td>'
                            f'<td>{_date(p.get("iam_last_used")) or "never"}</td>'
                            f'<td>{_date(p.get("created"))}</td></tr>' for p in never)
                        + "</tbody></table>")
    risky = [(p, h) for p in principals for h in _actionable(p)]
    if risky:
        rows = [f"<tr><td><span class=\"who\">{breakable(_label(p))}</span><div class=\"sub\">{breakable(p['arn'])}"
                f'</div></td><td>{_tags([_rule(h)], "risk")}</td>'
                f'<td>{escape(FINDING_STATUS.get(h.get("status"), h.get("status") or ""))}'
                f"</td><td><code>{breakable(_where(h))}</code></td><td>{breakable(h.get('remedy') or h.get('reason') or '')}"
                "</td></tr>" for p, h in risky]
        sections.append('<h2 id="high-risk">High-risk grants</h2><p class="lead">Grants that allow privilege '
                        "escalation, data access or tampering, and that were not used in the window or were used on "
                        "fewer resources than they grant: one row per granting statement, with its remedy.</p>"
                        '<div class="tablewrap"><table id="risky"><thead><tr><th>Principal</th><th>Grant</th>'
                        "<th>Status</th><th>Policy and statement</th><th>Remedy</th></tr></thead><tbody>" + "".join(rows)
                        + "</tbody></table></div>")
    sections += _org_html(principals)
    denied = [(p, d) for p in principals for d in p.get("denied_attempts") or []]
    if denied:
        denied.sort(key=lambda pd: -int(pd[1].get("count", 1)))
        sections.append('<h2 id="denied">Denied attempts</h2><p class="lead">What principals tried and could not do; '
                        "never added to a suggested policy.</p><table id=\"denied-table\"><thead><tr><th>Principal</th>"
                        "<th>Action</th><th>Error</th><th class=\"num\">Count</th><th>Last seen</th></tr></thead><tbody>"
                        + "".join(
                            f"<tr><td>{breakable(_label(p))}</td><td><code>"
                            f"{breakable(d.get('action') or d.get('event') or '?')}</code></td>"
                            f"<td>{escape(str(d.get('error_code') or ''))}</td>"
                            f'<td class="num">{number(d.get("count", 1))}</td><td>{_date(d.get("last_seen"))}</td>'
                            "</tr>" for p, d in denied[:200]) + "</tbody></table>")
    sections.append('<h2 id="details">Per principal</h2><p class="lead">Open a principal to see what it used, what it '
                    "is granted but does not use, and the least-privilege policy mined from its authorised calls."
                    "</p>" + "".join(_principal_details(p, known) for p in principals))

    title = f"miner review \u00b7 {window_span(review.get('window'))}"
    return Template(_template("review_page.html")).substitute(
        title=escape(title), css=_template("review.css"), heading=escape(title), meta=meta,
        body="\n".join(sections),
        footer=escape(f"Generated by miner {review.get('miner_version', '?')} at {_when(review.get('generated_at'))}. "
                      "Self-contained: no scripts, no external requests."),
    )


# ----------------------------------------------------------------------------------------- Markdown


def _md(s: Any) -> str:
    """Prose in a Markdown table cell or list item (our text or a logged value): see :func:`escape.markdown_text`."""
    return markdown_text(str(s if s is not None else ""))


def _code(s: Any, in_table: bool = True) -> str:
    """A logged identifier (name, ARN, action, service, error code) as an inline code span."""
    return markdown_code(str(s if s is not None else ""), in_table=in_table)


def _codes(items: Iterable[Any], in_table: bool = True) -> str:
    return ", ".join(_code(i, in_table) for i in items)


def _org_markdown(principals: list[dict]) -> list[str]:
    """The Markdown sections on SCPs and RCPs: calls they deny (errors), then the grants they block."""
    errors = [f"| {_code(_label(p))} | {_code(c['action'])} | {_code(c['resource'])} | {number(c['calls'])} | "
              f"{_md(c['kind'])} {_code(c['policy'])} at {_code(c['target'])} |"
              for p in principals for c in _org_errors(p)]
    blocked = [f"| {_code(_label(p))} | {_md(b['kind'])} {_code(b['policy'])} | {_code(b['target'])} | "
               f"{number(b['count'])} | {_codes(b['actions'][:4])} |" for p in principals for b in _org_blocked(p)]
    lines = []
    for title, lead, head, rows in (
            ("Calls an SCP or RCP denies (errors)", ORG_ERROR_LEAD, "| Principal | Action | Resource | Calls | "
             "Denied by |\n|---|---|---|---:|---|", errors),
            ("Blocked by SCP or RCP", ORG_LEAD, "| Principal | Policy | Attached to | Actions | Examples |\n"
             "|---|---|---|---:|---|", blocked)):
        if rows:
            lines += [f"## {title}", "", _md(lead), "", *head.split("\n"), *rows, ""]
    return lines


def render_markdown(review: dict, changes: dict | None = None) -> str:
    """The review as Markdown (GitHub-flavoured: pipe tables, ``<details>`` for policies).

    Logged values are data, never Markdown: identifiers are inline code spans (no HTML, link, image or emoji can
    form in one), other text is backslash-escaped, control characters are shown as escapes.

    Args:
        review: the review dict.
        changes: optional quarter-over-quarter changes.

    Returns:
        Markdown text.
    """
    known = bool(review.get("grants_known"))
    lines = [f"# miner review: {window_span(review.get('window'))}", ""]
    lines += [f"- **{k}:** {_md(v)}" for k, v in _meta_rows(review)] + [""]
    s = review.get("summary") or {}
    lines.append(f"**{number(s.get('principals', 0))}** principals, **{number(s.get('active', 0))}** active, "
                 f"**{number(s.get('never_used', 0))}** never used in the window"
                 + (f", **{number(s.get('unused_actions', 0))}** unused granted actions, "
                    f"**{number(s.get('high_risk', s.get('high_risk_unused', 0)))}** high-risk grants (unused or too "
                    "broad)" if known else "")
                 + f", **{number(s.get('denied', 0))}** denied attempts.")
    lines.append("")
    if not known:
        lines += ["> **Grants unknown:** no IAM snapshot or live IAM was given; this review shows usage only.", ""]
    for note in review.get("notes") or []:
        lines += [f"> {_md(note)}", ""]
    if changes:
        cs = changes.get("summary") or {}
        prev = changes.get("previous") or {}
        lines += [f"## Changes since {previous_review_label(changes)}", "",
                  f"Compared with {previous_review_label(changes)} (generated {_md(_when(prev.get('generated_at')))}): "
                  + ", ".join(f"{number(cs.get(k, 0))} {k.replace('_', ' ')}" for k in (
                          "new_principals", "gone_principals", "grants_added", "grants_removed",
                          "usage_appeared", "usage_stopped")) + ".", ""]
        for key, title in (("new_principals", "New principals"), ("gone_principals", "Gone principals")):
            if changes.get(key):
                lines += [f"**{title}:** " + _codes(changes[key], in_table=False), ""]
        if changes.get("changed"):
            lines += ["| Principal | Grants added | Grants removed | Usage appeared | Usage stopped |", "|---|---|---|---|---|"]
            for c in changes["changed"]:
                lines.append("| " + " | ".join(
                    [_code(c.get("name") or c["arn"]) + (f" ({_md(c['status_change'])})" if c.get("status_change") else "")]
                    + [_codes(c.get(k) or []) for k in
                       ("grants_added", "grants_removed", "usage_appeared", "usage_stopped")]) + " |")
            lines.append("")
    lines += ["## Principals ranked by unused privilege and risk", ""]
    if known:
        lines += ["| # | Principal | Score | Granted | Used | Unused | High-risk | Unused services | Last activity | Denied |",
                  "|---:|---|---:|---:|---:|---:|---|---|---|---:|"]
        for p in review.get("principals", []):
            g = p.get("granted") or {}
            lines.append(
                f"| {p.get('rank')} | {_code(_label(p))}{' **(never used)**' if p.get('never_used') else ''} | "
                f"{number(p.get('score'))} | {number(g.get('actions'))} | {number(len(p.get('used_actions') or []))} | "
                f"{number(p.get('unused_count'))} | {_codes(_rule(h) for h in _actionable(p)[:5])} | "
                f"{_codes((p.get('unused_services') or [])[:8])} | {_date(p.get('last_seen')) or 'never'} | "
                f"{number(p.get('denied', 0))} |")
    else:
        lines += ["| # | Principal | Events | Used actions | Services | Last activity | Denied |", "|---:|---|---:|---:|---|---|---:|"]
        for p in review.get("principals", []):
            lines.append(f"| {p.get('rank')} | {_code(_label(p))} | {number(p.get('events', 0))} | "
                         f"{number(len(p.get('used_actions') or []))} | {_codes(p.get('services_used') or [])} | "
                         f"{_date(p.get('last_seen')) or 'never'} | {number(p.get('denied', 0))} |")
    lines.append("")
    lines += evidence.markdown_section(review)  # IAM Access Advisor's proof (empty without `miner advisor`)
    never = [p for p in review.get("principals", []) if p.get("never_used")]
    if never:
        lines += ["## Removal candidates (no activity in the window)", ""]
        lines += [f"- {_code(p['arn'], in_table=False)}"
                  + (f" (IAM last used: {_date(p['iam_last_used'])})" if p.get("iam_last_used") else "")
                  for p in never] + [""]
    risky = [(p, h) for p in review.get("principals", []) for h in _actionable(p)]
    if risky:
        lines += ["## High-risk grants", "", "| Principal | Grant | Status | Policy and statement | Remedy |",
                  "|---|---|---|---|---|"]
        lines += [f"| {_code(_label(p))} | {_code(_rule(h))} | {_md(FINDING_STATUS.get(h.get('status'), ''))} | "
                  f"{_code(_where(h))} | {_md(h.get('remedy') or h.get('reason', ''))} |" for p, h in risky] + [""]
    lines += _org_markdown(review.get("principals", []))
    denied = [(p, d) for p in review.get("principals", []) for d in p.get("denied_attempts") or []]
    if denied:
        lines += ["## Denied attempts", "", "| Principal | Action | Error | Count |", "|---|---|---|---:|"]
        lines += [f"| {_code(_label(p))} | {_code(d.get('action') or d.get('event'))} | {_code(d.get('error_code'))} | "
                  f"{number(d.get('count', 1))} |" for p, d in denied] + [""]
    lines += ["## Suggested policies", ""]
    for p in review.get("principals", []):
        pol = p.get("suggested_policy")
        if not pol:
            continue
        docs = pol if isinstance(pol, list) else [pol]
        lines += [f"<details><summary>#{p.get('rank')} <code>{escape(_label(p))}</code></summary>", ""]
        for d in docs:  # ASCII JSON: no line of it can close the fence
            lines += ["```json", json.dumps(d, indent=2), "```", ""]
        lines += ["</details>", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- notebook helpers

#: Series colours of the notebook charts: matplotlib's tab10 without its grey, which is kept for "other".
SERIES_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
OTHER_COLOUR = "#b0b0b0"


def daily_by_service(timeline, top: int = len(SERIES_COLOURS)):
    """Events per day and service with the busiest ``top`` services as columns and the rest summed as ``other``.

    Args:
        timeline: rows of ``day``, ``service`` and ``events`` (:func:`miner.usage.timeline`).
        top: at most this many services of their own (at most :data:`SERIES_COLOURS` many).

    Returns:
        A DataFrame indexed by day (every day from the first to the last, missing ones 0), busiest service first,
        ``other (N services)`` last when there are more than ``top``.
    """
    import pandas as pd

    top = max(1, min(top, len(SERIES_COLOURS)))
    if timeline is None or not len(timeline):
        return pd.DataFrame()
    per_day = timeline.pivot_table(index="day", columns="service", values="events", aggfunc="sum", fill_value=0)
    per_day.index = pd.to_datetime(per_day.index)
    per_day = per_day.reindex(pd.date_range(per_day.index.min(), per_day.index.max(), freq="D"), fill_value=0)
    order = per_day.sum().sort_values(ascending=False, kind="stable").index
    keep, rest = list(order[:top]), list(order[top:])
    out = per_day[keep]
    if rest:
        out = out.assign(**{f"other ({len(rest)} service{'s' if len(rest) > 1 else ''})": per_day[rest].sum(axis=1)})
    out.columns.name = "service"
    return out


def plot_daily_by_service(timeline, title: str, top: int = len(SERIES_COLOURS), stacked: bool = True, ax=None):
    """Chart events per day by service (matplotlib): one distinct colour per service, the rest as grey ``other``,
    the legend beside the plot (never over the data) in the order of the stack, dates as ``YYYY-MM-DD``.

    Args:
        timeline: rows of ``day``, ``service`` and ``events`` (:func:`miner.usage.timeline`).
        title: the chart title.
        top: at most this many services of their own (see :func:`daily_by_service`).
        stacked: a stacked area chart (the whole store) or one line per service (one principal).
        ax: draw into these axes (default: a new 11 x 4 in figure).

    Returns:
        The matplotlib ``Axes``.
    """
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    frame = daily_by_service(timeline, top)
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 4), layout="constrained")
    colours = [OTHER_COLOUR if str(c).startswith("other (") else SERIES_COLOURS[i % len(SERIES_COLOURS)]
               for i, c in enumerate(frame.columns)]
    if stacked and len(frame.columns):
        ax.stackplot(frame.index, *[frame[c] for c in frame.columns], labels=list(frame.columns), colors=colours,
                     linewidth=0)
    else:
        for c, colour in zip(frame.columns, colours):
            ax.plot(frame.index, frame[c], label=c, color=colour, linewidth=1.6)
    handles, labels = ax.get_legend_handles_labels()
    if stacked:  # the top band first, as the eye reads the stack
        handles, labels = handles[::-1], labels[::-1]
    if handles:
        ax.legend(handles, labels, title="service", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title)
    ax.set_ylabel("events per day")
    ax.set_ylim(bottom=0)
    ax.margins(x=0)
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.set_major_formatter(lambda v, _: number(v))
    ax.grid(axis="y", color=GRID)
    ax.set_axisbelow(True)
    return ax


def changes_frame(changes: dict):
    """What changed between two reviews, one row per change (for notebooks).

    Args:
        changes: from :func:`miner.review.compare_reviews`.

    Returns:
        A DataFrame with columns name, change (``new principal``, ``gone principal``, ``became idle``/``active``,
        ``grant added``/``removed``, ``usage appeared``/``stopped``), what (the principal ARN, grant or action)
        and arn.
    """
    import pandas as pd

    rows = [{"name": arn.rsplit("/", 1)[-1], "change": kind, "what": arn, "arn": arn}
            for key, kind in (("new_principals", "new principal"), ("gone_principals", "gone principal"))
            for arn in changes.get(key) or []]
    for c in changes.get("changed") or []:
        name = c.get("name") or c["arn"]
        if c.get("status_change"):
            rows.append({"name": name, "change": c["status_change"], "what": c["arn"], "arn": c["arn"]})
        rows += [{"name": name, "change": kind, "what": item, "arn": c["arn"]}
                 for key, kind in (("grants_added", "grant added"), ("grants_removed", "grant removed"),
                                   ("usage_appeared", "usage appeared"), ("usage_stopped", "usage stopped"))
                 for item in c.get(key) or []]
    return pd.DataFrame(rows, columns=["name", "change", "what", "arn"])


def write_review(review: dict, folder: str | Path, changes: dict | None = None,
                 formats: Iterable[str] = ("html", "json")) -> list[Path]:
    """Write a review as ``review.html``, ``review.json``, ... into a folder (created when missing).

    Args:
        review: the review dict.
        folder: the folder.
        changes: optional quarter-over-quarter changes (shown in HTML and Markdown, kept in JSON).
        formats: any of :data:`FORMATS`.

    Returns:
        The paths written, as ``pathlib.Path``.
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        fmt = format_for(None, fmt)
        path = folder / f"review.{fmt}"
        path.write_text(render(review, fmt, changes), encoding="utf-8")
        paths.append(path)
    return paths
