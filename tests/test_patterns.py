"""Tests for IAM resource patterns: literal escapes (${*}, ${?}, ${$}), matching and covering under IAM's rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from miner import diff
from miner.patterns import covers, is_literal, literal, regex, text_of, tokens


@pytest.mark.parametrize("text, pattern", [
    ("plain/key.json", "plain/key.json"),
    ("*", "${*}"),
    ("a?b", "a${?}b"),
    ("${aws:username}", "${$}{aws:username}"),
    ("${*}", "${$}{${*}}"),
    ("cost$", "cost${$}"),            # a trailing $ could start ${ when joined to what follows
    ("$LATEST", "$LATEST"),            # a $ before anything but { stays readable
])
def test_literal_escapes(text, pattern):
    assert literal(text) == pattern
    assert is_literal(pattern) and text_of(pattern) == text
    assert regex(pattern).fullmatch(text)


def test_escapes_are_not_wildcards():
    key = "arn:aws:s3:::b/${*}"
    assert covers(key, "arn:aws:s3:::b/" + literal("*"))
    assert not covers(key, "arn:aws:s3:::b/other")
    assert not covers("arn:aws:s3:::b/${?}", "arn:aws:s3:::b/x")
    assert covers("arn:aws:s3:::b/*", "arn:aws:s3:::b/${*}")  # a real wildcard covers a literal star


@pytest.mark.parametrize("pattern, other, expected", [
    ("*", "*", True),
    ("arn:aws:kms:us-east-1:1:key/*", "*", False),         # an underived resource needs "*"
    ("arn:aws:s3:::b/*", "arn:aws:s3:::b/a*", True),
    ("arn:aws:s3:::b/a*", "arn:aws:s3:::b/*", False),
    ("arn:aws:s3:::b/?", "arn:aws:s3:::b/*", False),        # ? is one character, * any number
    ("arn:aws:s3:::b/*", "arn:aws:s3:::b/?", True),
    ("s-??????", "s-??????", True),
    ("s-*", "s-??????", True),
    ("arn:aws:iam::1:role/*", "arn:aws:iam::1:role/*/name", True),
    ("arn:aws:iam::1:role/name", "arn:aws:iam::1:role/*/name", False),
    ("arn:aws:s3:::home/${aws:username}/*", "arn:aws:s3:::home/alice/x", True),  # variables read generously
])
def test_covers(pattern, other, expected):
    assert covers(pattern, other) is expected
    assert diff.resource_matches(pattern, other) is expected


def test_tokens_of_unclosed_and_unknown_escapes():
    assert tokens("a${b") == ("a", "$", "{", "b")
    assert tokens("${aws:username}")[0] is not None and not is_literal("${aws:username}")


_ALPHA = st.text(alphabet="ab*?${}/", max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_literal_matches_exactly_its_text(text):
    p = literal(text)
    assert is_literal(p) and text_of(p) == text and regex(p).fullmatch(text)
    assert not regex(p).fullmatch(text + "x")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12))
def test_joined_literals_stay_literal(a, b):
    joined = literal(a) + literal(b)
    assert is_literal(joined) and text_of(joined) == a + b


@settings(max_examples=400, deadline=None)
@given(_ALPHA, _ALPHA, st.lists(st.text(alphabet="ab*?${}/", max_size=8), max_size=6))
def test_covers_is_sound(p, r, samples):
    """covers(p, r) implies every string r matches, p matches too (checked on samples and r's own texts)."""
    if covers(p, r):
        for s in samples + [text_of(r).replace("${...}", "")]:
            if regex(r).fullmatch(s):
                assert regex(p).fullmatch(s), (p, r, s)
