"""Resource templates: which segments of observed resource names vary, and how, so a grant survives tomorrow."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from itertools import product

from miner.patterns import literal

# Names are raw text here (the logged names, escapes resolved); templates are built back as patterns: constant
# text through patterns.literal(), variable parts as raw `*` or `?` runs. A template never crosses the group it is
# learned in (one bucket's objects, or one resource type in one account and region), because only the part after
# the group's fixed head is analysed.

#: Separators between the segments of a name: S3 keys split on "/", other resource names on "/" and ":".
S3_SEPARATORS = "/"
ARN_SEPARATORS = "/:"
#: At most this many distinct values of a word-like segment are kept listed (environments, tenants, ...).
CLOSED_SET_MAX = 4

_YEAR = re.compile(r"(19[7-9][0-9]|20[0-9][0-9]|2100)")
_TWO = re.compile(r"[0-9]{2}")
_HIVE = re.compile(r"(year|month|day|hour|minute|yyyy|mm|dd|hh)=([0-9]{1,4})", re.I)
# Date/time spellings inside a segment (fixed length, so a `?` run stands for them): ISO with time, basic with
# time, plain dates with -, _ or nothing between the parts.
_DATETIME = re.compile(
    r"(?<![0-9])(?:"
    r"(?:19|20)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])T[0-2][0-9]:[0-5][0-9](?::[0-5][0-9](?:\.[0-9]{1,9})?)?Z?"
    r"|(?:19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])T[0-2][0-9][0-5][0-9](?:[0-5][0-9])?Z?"
    r"|(?:19|20)[0-9]{2}([-_]?)(?:0[1-9]|1[0-2])\1(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:19|20)[0-9]{2}[-_](?:0[1-9]|1[0-2])"
    r")(?![0-9])")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_HEX = re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{16,}(?![0-9A-Za-z])|(?<![0-9A-Za-z])[0-9A-F]{16,}(?![0-9A-Za-z])")
_DIGITS = re.compile(r"[0-9]{3,}")
_CUT = "-_.=+,@ ~"  # where a common prefix or suffix of a varying segment is cut back to


@dataclass(frozen=True)
class Template:
    """A pattern (the part after the group's head) learned from observed names, and what it says."""

    pattern: str
    members: tuple[str, ...]  # the observed names (raw text) it covers
    why: str  # e.g. "segments 2-3 a date (yyyy/mm); segment 4 an id"


@dataclass(frozen=True)
class _Pos:
    kind: str  # const | date | fixed | id | closed | open
    values: tuple[str, ...]  # distinct raw values, sorted
    pieces: tuple[str, ...] = ()  # the pattern piece (for closed: one per value)
    label: str = ""


#: Mask marks: one character of a fixed-length run (``?``) and a free run (``*``). Lone surrogates, which a decoded
#: log value never holds (JSON decoders reject them); a value that holds one anyway is never masked (:func:`_plain`).
_Q, _S = "\ud800", "\ud801"


def _plain(values) -> bool:
    """Whether no value holds a mask mark (so masks can be built from them)."""
    return not any(_Q in v or _S in v for v in values)


def _fixed_mask(value: str, dates_only: bool = False) -> str:
    """``value`` with every date/time, UUID and long hex run (only dates with ``dates_only``) replaced by
    :data:`_Q` marks (their length is fixed, so a ``?`` run stands for them)."""
    out = _DATETIME.sub(lambda m: _Q * len(m.group(0)), value)
    if dates_only:
        return out
    out = _UUID.sub(lambda m: "".join("-" if c == "-" else _Q for c in m.group(0)), out)
    return _HEX.sub(lambda m: _Q * len(m.group(0)), out)


def _to_pattern(masked: str) -> str:
    """A masked value back to a pattern: :data:`_Q` -> ``?``, :data:`_S` -> ``*``, the rest literal."""
    out, lit = [], []
    for ch in masked:
        if ch in (_Q, _S):
            if lit:
                out.append(literal("".join(lit)))
                lit = []
            if ch == _S and out and out[-1] == "*":
                continue
            out.append("?" if ch == _Q else "*")
        else:
            lit.append(ch)
    if lit:
        out.append(literal("".join(lit)))
    return "".join(out)


def _cut_prefix(prefix: str) -> str:
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] in _CUT:
            return prefix[: i + 1]
    return ""


def _cut_suffix(suffix: str) -> str:
    for i, ch in enumerate(suffix):
        if ch in _CUT:
            return suffix[i:]
    return ""


def _id_like(middle: str) -> bool:
    return bool(_DIGITS.search(middle) or _UUID.search(middle) or _HEX.search(middle)) or \
        sum(ch.isdigit() for ch in middle) >= max(1, len(middle) // 3)


def _date_positions(columns: list[tuple[str, ...]]) -> dict[int, str]:
    """Positions that hold a date spelled over several segments (yyyy/mm[/dd[/hh]], or Hive ``year=`` parts)."""
    out: dict[int, str] = {}
    for i, col in enumerate(columns):
        if all(_HIVE.fullmatch(v) for v in col):
            out[i] = "hive"
            continue
        if i in out or not all(_YEAR.fullmatch(v) for v in col):
            continue
        bounds = [(1, 12), (1, 31), (0, 23)]
        j = i + 1
        for lo, hi in bounds:
            if j < len(columns) and all(_TWO.fullmatch(v) and lo <= int(v) <= hi for v in columns[j]):
                out[j] = "date"
                j += 1
            else:
                break
        if j > i + 1:
            out[i] = "date"
    return out


def _position(values: tuple[str, ...], date_kind: str | None, group_size: int, max_resources: int,
              dates_only: bool = False) -> _Pos:
    """How one segment position varies across a shape group's names.

    With ``dates_only`` only a date may vary (as a ``?`` run): the position names a resource of its own (a table,
    a key: two key ids are no evidence for every key), or the name was seen once (a date moves on; an id may not).
    """
    if date_kind == "hive":
        keys = {_HIVE.fullmatch(v).group(1) for v in values}
        lengths = {len(v) for v in values}
        if len(keys) == 1 and len(lengths) == 1:
            key = next(iter(keys))
            return _Pos("date", values, (literal(key + "=") + "?" * (len(values[0]) - len(key) - 1),), "a date part")
        return _Pos("id", values, ("*",), "a date part")
    if date_kind == "date":
        return _Pos("date", values, ("?" * len(values[0]),), "a date part")
    plain = _plain(values)
    masks = {_fixed_mask(v, dates_only) for v in values} if plain else set()
    if len(masks) == 1:
        mask = next(iter(masks))
        if _Q in mask:  # a date/time, UUID or hash inside the segment: a `?` run stands for it
            return _Pos("fixed", values, (_to_pattern(mask),), _label(values[0]))
    if len(values) == 1:
        return _Pos("const", values, (literal(values[0]),))
    if dates_only:
        return _Pos("open", values, ())
    prefix = _cut_prefix(os.path.commonprefix(list(values)))
    rest = [v[len(prefix):] for v in values]
    suffix = _cut_suffix(os.path.commonprefix([r[::-1] for r in rest])[::-1])
    middles = [r[: len(r) - len(suffix)] for r in rest]
    if all(_id_like(m) for m in middles if m):
        masked = {_fixed_mask(m) for m in middles} if plain else set()
        mid = _to_pattern(next(iter(masked))) if len(masked) == 1 and _Q in next(iter(masked)) and \
            all(c == _Q for c in next(iter(masked))) else "*"
        return _Pos("id", values, (literal(prefix) + mid + literal(suffix),), "an id")
    if len(values) <= CLOSED_SET_MAX and len(values) < group_size:
        return _Pos("closed", values, tuple(literal(v) for v in values), "one of a few names")
    if max_resources > 0 and group_size > max_resources:
        return _Pos("open", values, (literal(prefix) + "*" + literal(suffix),),
                    f"a free-form name ({len(values)} names > --max-resources {max_resources})")
    return _Pos("open", values, ())  # too few to generalise: the names stay exact


def _label(value: str) -> str:
    if _DATETIME.search(value):
        return "a date/time"
    if _UUID.search(value):
        return "a UUID"
    return "a hash or hex id"


def _describe(positions: list[_Pos]) -> str:
    parts: dict[str, list[int]] = {}
    for i, p in enumerate(positions, 1):
        if p.kind in ("date", "fixed", "id", "open", "closed") and p.label:
            parts.setdefault(p.label if p.kind != "closed" else "a name of too many combinations", []).append(i)

    def span(ix: list[int]) -> str:
        return f"segment {ix[0]}" if len(ix) == 1 else \
            f"segments {ix[0]}-{ix[-1]}" if ix == list(range(ix[0], ix[-1] + 1)) else \
            f"segments {', '.join(map(str, ix))}"
    return "; ".join(f"{span(ix)} {label}" for label, ix in parts.items())


def _split(name: str, separators: str) -> list[str]:
    return re.split(f"([{re.escape(separators)}])", name)


def learn(names: list[str], separators: str, max_resources: int, limit: int = 64, *,
          own_name_first: bool = False) -> tuple[list[Template], list[str]]:
    """Learn templates for the names of one resource group.

    Names are grouped by their segment structure (same number of segments and the same separators). In a group of
    two or more, a segment that is a date (``2026/08/14`` over several segments, ``dt=2026-08-14``,
    ``20260814T1200Z``) becomes a ``?`` run even when it did not change in the window (time moves on; this
    holds for a name seen once too), as do UUIDs and hashes; a segment that varies and looks like an id (digits, hex) becomes ``*`` between its constant prefix
    and suffix (``ord-*.pdf``); a word-like segment with a few values (environments, tenants) keeps them listed; a
    free-form segment is generalised only when the group holds more than ``max_resources`` names (the last resort),
    else its names stay exact. Constant segments are kept.

    Args:
        names: the names after the group's head (raw text, as logged), distinct.
        separators: the segment separators (:data:`S3_SEPARATORS` or :data:`ARN_SEPARATORS`).
        max_resources: the ``--max-resources`` threshold (``0``: never generalise: every name stays exact).
        limit: at most this many templates from one structure (closed-set combinations), else the closed sets
            are opened to ``*``.
        own_name_first: the first segment is a resource's own name (a table, a queue, a bucket): it may vary only
            in a date, UUID or hash (``orders-audit-????-??``), so a template never reaches another resource
            of a name that was not observed.

    Returns:
        (templates, names left exact).
    """
    if max_resources <= 0:
        return [], sorted(names)
    shapes: dict[tuple, list[list[str]]] = {}
    for n in sorted(set(names)):
        parts = _split(n, separators)
        # a resource's own name varies only by a date: names that differ otherwise are other resources
        own = _fixed_mask(parts[0], dates_only=True) if own_name_first else ""
        shapes.setdefault((len(parts), tuple(parts[1::2]), own), []).append(parts)
    templates: list[Template] = []
    exact: list[str] = []
    for members in (shapes[k] for k in sorted(shapes)):
        _learn_shape(members, max_resources, limit, templates, exact, own_name_first=own_name_first)
    return templates, sorted(exact)


def _learn_shape(members: list[list[str]], max_resources: int, budget: int, templates: list[Template],
                 exact: list[str], listed: tuple[tuple[int, str], ...] = (), *, own_name_first: bool = False) -> None:
    """Learn the names of one structure (split parts, separators at odd indexes), appending to the outputs.

    A word-like position with a few values (``exports``/``incoming``, tenants) splits the names by value, and
    each part is learned on its own, so every part keeps its own constant segments.
    """
    columns = [tuple(sorted({m[i] for m in members})) for i in range(0, len(members[0]), 2)]
    dates = _date_positions(columns)
    positions = [_position(col, dates.get(i), len(members), max_resources, len(members) < 2 or
                           (own_name_first and i == 0)) for i, col in enumerate(columns)]
    if all(p.kind in ("const", "closed") for p in positions) or any(p.kind == "open" and not p.pieces
                                                                    for p in positions):
        exact.extend("".join(m) for m in members)
        return
    split = next((i for i, p in enumerate(positions) if p.kind == "closed"), None)
    if split is not None and budget >= len(positions[split].values):
        for value in positions[split].values:
            part = [m for m in members if m[2 * split] == value]
            _learn_shape(part, max_resources, budget // len(positions[split].values), templates, exact,
                         listed + ((split + 1, value),), own_name_first=own_name_first)
        return
    if not listed and all(p.kind in ("id", "open") and p.pieces[0] == "*" for p in positions) and \
            len(members) <= max_resources:
        # nothing constant would be left (keys "7" and "9" at a bucket's root): that is the free-form case
        exact.extend("".join(m) for m in members)
        return
    pieces = ["*" if p.kind == "closed" else p.pieces[0] for p in positions]
    seps = members[0][1::2]
    pattern = "".join(piece + (literal(seps[i]) if i < len(seps) else "") for i, piece in enumerate(pieces))
    why = _describe(positions)
    if listed:
        why = "; ".join([f"segment {i} one of a few names ({v})" for i, v in listed] + ([why] if why else []))
    templates.append(Template(pattern, tuple("".join(m) for m in members), why))
