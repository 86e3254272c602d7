"""IAM resource patterns: logged text written as literals (``${*}``, ``${?}``, ``${$}``), and matching under IAM's rules."""

from __future__ import annotations

import re
from functools import lru_cache

# A pattern is the text of a Resource element. IAM reads ``*`` as any run of characters, ``?`` as one character,
# ``${name}`` as a policy variable, and ``${*}``, ``${?}``, ``${$}`` as the literal characters ``*``, ``?``, ``$``
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_variables.html, "Special characters").
# Everything miner derives from a log is data: it enters a pattern only through :func:`literal`.

#: Token kinds: a literal character is the character itself (a 1-character str); these three are not.
ANY, ONE, VAR = ("*",), ("?",), ("${}",)

_SPECIAL = {"*": "${*}", "?": "${?}"}
_ESCAPES = {"${*}": "*", "${?}": "?", "${$}": "$"}


def literal(text: str) -> str:
    """The pattern that matches exactly ``text``: ``*`` -> ``${*}``, ``?`` -> ``${?}``, ``$`` -> ``${$}`` where a
    ``$`` starts a ``${`` or ends the text (so no ``${`` can form when patterns are joined).

    Args:
        text: a name, key or ARN as logged.

    Returns:
        The escaped pattern (``text`` itself when it holds none of ``*``, ``?`` and ``$``).
    """
    if "*" not in text and "?" not in text and "$" not in text:
        return text
    out = []
    last = len(text) - 1
    for i, ch in enumerate(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch == "$" and (i == last or text[i + 1] == "{"):
            out.append("${$}")
        else:
            out.append(ch)
    return "".join(out)


@lru_cache(maxsize=65536)
def tokens(pattern: str) -> tuple:
    """A pattern's tokens: literal characters (1-character strings), :data:`ANY`, :data:`ONE` and :data:`VAR`.

    Args:
        pattern: a Resource element.

    Returns:
        The tokens; ``${*}``/``${?}``/``${$}`` are literal characters, any other ``${...}`` is a variable.
    """
    out: list = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "$" and pattern.startswith("${", i):
            end = pattern.find("}", i + 2)
            if end > 0:
                piece = pattern[i:end + 1]
                out.append(_ESCAPES[piece] if piece in _ESCAPES else VAR)
                i = end + 1
                continue
        out.append(ANY if ch == "*" else ONE if ch == "?" else ch)
        i += 1
    return tuple(out)


def is_literal(pattern: str) -> bool:
    """True when the pattern matches one string only (no wildcard, no policy variable).

    Args:
        pattern: a Resource element.

    Returns:
        Whether it is a literal.
    """
    if "*" not in pattern and "?" not in pattern and "${" not in pattern:
        return True
    return all(isinstance(t, str) for t in tokens(pattern))


def text_of(pattern: str) -> str:
    """The string a literal pattern matches (escapes resolved); wildcards and variables are shown as written.

    Args:
        pattern: a Resource element.

    Returns:
        The text, for display and for matching a concrete resource.
    """
    if "${" not in pattern:
        return pattern
    return "".join(t if isinstance(t, str) else t[0] if t is not VAR else "${...}" for t in tokens(pattern))


@lru_cache(maxsize=16384)
def regex(pattern: str) -> re.Pattern:
    """A regular expression that full-matches the concrete strings the pattern covers.

    A policy variable may stand for anything (its value is not known here), so it matches any run of characters.

    Args:
        pattern: a Resource element.

    Returns:
        The compiled expression (case-sensitive, ``.`` matching newlines).
    """
    parts = [".*" if t is ANY or t is VAR else "." if t is ONE else re.escape(t) for t in tokens(pattern)]
    return re.compile("".join(parts), re.S)


@lru_cache(maxsize=65536)
def covers(pattern: str, other: str) -> bool:
    """Does ``pattern`` match every string that ``other`` matches? (IAM resource matching, case-sensitive.)

    ``other`` may be a literal (the usual case: an observed resource) or itself a pattern: a wildcard in
    ``other`` is covered only by a wildcard of ``pattern`` that can stand for it (``*`` by ``*``, ``?`` by ``?``
    or ``*``), so ``*`` (a resource the mapping could not derive) is covered only by a pattern that matches
    anything. A policy variable in ``pattern`` is read generously (it matches anything); one in ``other``
    counts as ``*``.

    Args:
        pattern: the covering pattern, e.g. a policy's Resource element.
        other: the covered pattern or literal.

    Returns:
        True when ``pattern`` covers ``other``.
    """
    if pattern == other:
        return True
    if is_literal(other):
        return regex(pattern).fullmatch(text_of(other)) is not None
    p, r = tokens(pattern), tokens(other)
    # reach[j]: the first i tokens of p can match the first j tokens of r (one row of the usual glob DP)
    reach = [True] + [False] * len(r)
    for t in p:
        if t is ANY or t is VAR:
            nxt, seen = [], False
            for ok in reach:
                seen = seen or ok
                nxt.append(seen)
        else:
            nxt = [False]
            for j, tok in enumerate(r):
                if not reach[j]:
                    nxt.append(False)
                elif t is ONE:
                    nxt.append(isinstance(tok, str) or tok is ONE)
                else:
                    nxt.append(tok == t and isinstance(tok, str))
        reach = nxt
        if not any(reach):
            return False
    return reach[-1]
