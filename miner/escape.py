"""Logged values escaped for where they land: the terminal, Markdown, CSV, HTML, JSON, YAML and HCL."""

from __future__ import annotations

import csv
import html as _html
import io
import json
import math
import re
from typing import Any, Iterable

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _python_escape(ch: str) -> str:
    n = ord(ch)
    return _SHORT.get(ch) or (f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}")


def _json_escape(ch: str) -> str:
    n = ord(ch)
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"


def _u_escape(ch: str) -> str:
    """``\\n`` ``\\r`` ``\\t``, else ``\\uNNNN`` or ``\\UNNNNNNNN``: escapes of HCL strings and YAML double-quoted scalars."""
    n = ord(ch)
    return _SHORT.get(ch) or (f"\\u{n:04X}" if n < 0x10000 else f"\\U{n:08X}")


def _sub_hidden(text: str, escape, keep: str = "") -> str:
    """``text`` with every character :meth:`str.isprintable` rejects (except those in ``keep``) replaced."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else escape(c) for c in text)


# ----------------------------------------------------------------------------- terminal (and every report)


def visible(text: str) -> str:
    """A logged value as plain text with its control characters made visible, for the terminal and the reports.

    Every character that :meth:`str.isprintable` rejects (C0/C1 controls such as ESC, DEL, format characters such
    as bidi overrides and zero-width spaces, line/paragraph separators, non-ASCII spaces) is shown as Python shows
    it in ``repr``: ``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u202e``, ``\\U000e0001``. Other characters, the
    backslash included, are kept. The result never holds a character that a terminal could act on.

    Args:
        text: the value (or a line of text holding values).

    Returns:
        The printable text.
    """
    return _sub_hidden(text, _python_escape)


# ----------------------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"[\\`*_~\[\]<>&!|$]")


def markdown_text(text: str) -> str:
    """A value inside Markdown prose or a table cell (not at the start of a line), rendered as the same text.

    Control characters are made visible (:func:`visible`), then every character that can open Markdown or HTML
    syntax is backslash-escaped: no raw HTML, entity, link, image, emphasis, strikethrough, math or code span
    can form, and a pipe stays inside its table cell.

    Args:
        text: the value.

    Returns:
        Markdown source.
    """
    return _MD_SPECIAL.sub(r"\\\g<0>", visible(text))


def markdown_code(text: str, *, in_table: bool = True) -> str:
    """A value as a Markdown inline code span, rendered as exactly ``visible(text)`` in monospace.

    Nothing inside a code span is Markdown, HTML, a link or an emoji (GitHub renders ``:secret:`` as an emoji
    in prose, never in code). The fence is longer than any run of backticks in the value, and the value is
    padded with a space where CommonMark would otherwise eat one of its backticks or spaces.

    Args:
        text: the value.
        in_table: the span stands in a GFM table cell, where a ``|`` must be written ``\\|``.

    Returns:
        Markdown source (empty for an empty value).
    """
    s = visible(text)
    if not s:
        return ""
    fence = "`" * (max(map(len, re.findall("`+", s)), default=0) + 1)
    if s[0] == "`" or s[-1] == "`" or (s[0] == " " and s[-1] == " " and s.strip(" ")):
        s = f" {s} "
    return fence + (s.replace("|", "\\|") if in_table else s) + fence


# ----------------------------------------------------------------------------- CSV

#: First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection; ASVS 5.0 1.2.10 adds
#: NUL). Tab, CR and NUL cannot lead a cell written by :func:`csv_cell`: :func:`visible` has escaped them.
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\0")


def csv_cell(value: Any) -> Any:
    """One CSV cell: text with control characters visible and a ``'`` before a formula's first character.

    Args:
        value: the cell; ``None`` and NaN become empty, numbers and other non-text values are left to ``csv``.

    Returns:
        The value to write.
    """
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if not isinstance(value, str):
        return value
    s = visible(value)
    return "'" + s if s.startswith(CSV_FORMULA_START) else s


def csv_text(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    """A CSV document as OWASP recommends for untrusted data: every cell quoted, formulas neutralised.

    Quoting every cell keeps a value whole even where a spreadsheet splits on ``;`` or tabs.

    Args:
        header: the column names.
        rows: the rows; each cell goes through :func:`csv_cell`.

    Returns:
        CSV text, ``\\n`` line ends.
    """
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n")
    w.writerow(header)
    w.writerows([csv_cell(v) for v in row] for row in rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------- HTML


def html(text: Any) -> str:
    """A value in HTML text or a quoted attribute: control characters visible, ``& < > " '`` as references.

    Args:
        text: the value (``str()`` is applied).

    Returns:
        HTML source.
    """
    return _html.escape(visible(str(text)))


# ----------------------------------------------------------------------------- JSON, YAML, HCL (exact values)


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that keeps readable non-ASCII text but writes every non-printable character as ``\\uNNNN``.

    ``json.dumps(ensure_ascii=False)`` leaves DEL, C1 controls, bidi overrides and line separators raw; here they
    are escaped, so ``json.loads`` gives back the exact value and no raw control character reaches a terminal.

    Args:
        obj: what to serialise.
        **kwargs: passed to :func:`json.dumps` (``indent``, ``sort_keys``, ...).

    Returns:
        The JSON text.
    """
    return _sub_hidden(json.dumps(obj, ensure_ascii=False, **kwargs), _json_escape, keep="\n")


def json_safe(obj: Any) -> Any:
    """``obj`` with every value strict JSON cannot hold made ``null``: NaN, infinities, pandas' NA and NaT.

    ``json.dumps`` writes a float NaN as the bare word ``NaN``, which is not JSON: a strict parser (``jq``,
    JavaScript, ``json.loads`` with ``parse_constant`` raising) rejects the whole document. NumPy arrays and
    scalars become lists and Python numbers.

    Args:
        obj: dicts, lists, tuples and scalars, as for :func:`json.dumps`.

    Returns:
        The same structure (new containers), ready for ``json.dumps(..., allow_nan=False)``.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if type(obj).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes, int)):  # NumPy arrays and scalars
        return json_safe(obj.tolist())
    return obj


def yaml_text(obj: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` (Unicode kept) whose strings with a non-printable character are double-quoted and escaped.

    PyYAML alone writes NEL (``\\x85``) raw in a single-quoted scalar, which reads back as a space, and keeps bidi
    overrides raw; here ``yaml.safe_load`` gives back the exact value and no raw control character is written.

    Args:
        obj: what to serialise (plain dicts, lists, strings and numbers).
        **kwargs: passed to :func:`yaml.dump` (``sort_keys``, ``width``, ...).

    Returns:
        The YAML text.
    """
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                                 style=None if s.isprintable() else '"'))
    text = yaml.dump(obj, Dumper=Dumper, allow_unicode=True, **kwargs)
    return _sub_hidden(text, _u_escape, keep="\n")  # only inside double quotes, where \\uNNNN is an escape too


def hcl_string(text: str) -> str:
    """A quoted HCL (Terraform) string literal that Terraform reads back as exactly ``text``.

    ``\\`` and ``"`` are escaped, every non-printable character is written ``\\n``, ``\\r``, ``\\t``, ``\\uNNNN``
    or ``\\UNNNNNNNN``, and ``${`` / ``%{`` become ``$${`` / ``%%{`` so no template sequence is read.

    Args:
        text: the value.

    Returns:
        The literal, with its quotes.
    """
    s = _sub_hidden(text.replace("\\", "\\\\").replace('"', '\\"'), _u_escape)
    return '"' + s.replace("${", "$${").replace("%{", "%%{") + '"'
