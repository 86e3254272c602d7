"""Hostile logged values reach every output as data: terminal, Markdown, CSV, HTML, JSON, YAML and Terraform."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
from html import unescape
from html.parser import HTMLParser

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from miner import escape
from miner.cli import app

ACCT = "111122223333"
ESC = "\x1b"
RED = ESC + "[31m"
OSC8 = ESC + "]8;;http://evil" + ESC + "\\click" + ESC + "]8;;" + ESC + "\\"
HTML = "<img src=x onerror=alert(1)>"
IMG = "![x](http://evil/b.png)"
FORMULA = '=HYPERLINK("http://evil","x")'
SECRET = f"arn:aws:secretsmanager:us-east-1:{ACCT}:secret:orders/db-AbCdEf"
APP = f"arn:aws:iam::{ACCT}:role/hostile-app"
#: A role whose name carries every payload, and one whose name is a spreadsheet formula.
EVIL_NAME = f"`x`{HTML}{IMG}[/]:secret:{RED}{OSC8}|p|"
EVIL = f"arn:aws:iam::{ACCT}:role/evil-{EVIL_NAME}"
FORMULA_ROLE = f"arn:aws:iam::{ACCT}:role/{FORMULA}"
#: S3 keys that hostile-app read (none holds ``${``, ``*`` or ``?``, which IAM itself escapes).
KEYS = ["report[/].csv", "a\nb\r\tc", f"`x`{HTML}{IMG}|p|", FORMULA, f"red{RED}{OSC8}", "nel\x85ls\u2028rlo\u202e\\\"q"]
WINDOW = ["--since", "2026-08-01", "--until", "2026-09-01"]


def _record(i: int, role: str, name: str, source: str, params: dict, *, name_as: str | None = None,
            resources: list | None = None, agent: str = "aws-cli/2", error: str | None = None) -> dict:
    r = {"eventVersion": "1.10", "eventID": f"hostile-{i}", "eventTime": f"2026-08-{10 + i % 18:02d}T10:00:00Z",
         "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::{ACCT}:assumed-role/x/s", "accountId": ACCT,
                          "sessionContext": {"sessionIssuer": {"type": "Role", "arn": role, "accountId": ACCT,
                                                               "userName": name_as or role.rsplit("/", 1)[-1]}}},
         "eventSource": source, "eventName": name, "awsRegion": "us-east-1", "sourceIPAddress": "10.0.0.1",
         "userAgent": agent, "requestParameters": params, "eventType": "AwsApiCall", "recipientAccountId": ACCT,
         "readOnly": True, "eventCategory": "Management"}
    if resources:
        r["resources"] = resources
    if error:
        r.update(errorCode=error, errorMessage="denied")
    return r


def _s3_get(i: int, key: str, **kw) -> dict:
    arn = f"arn:aws:s3:::orders-bucket/{key}"
    return _record(i, APP, "GetObject", "s3.amazonaws.com", {"bucketName": "orders-bucket", "key": key},
                   resources=[{"type": "AWS::S3::Object", "ARN": arn},
                              {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::orders-bucket"}], **kw)


def hostile_records() -> list[dict]:
    """CloudTrail records whose user agents, keys, ARNs, names and error codes carry the payloads."""
    recs = [_s3_get(i, key, agent=f"Boto3 {RED}red{OSC8} {HTML} [/]") for i, key in enumerate(KEYS)]
    recs += [
        _record(10, APP, "GetSecretValue", "secretsmanager.amazonaws.com", {"secretId": SECRET}),
        _s3_get(11, f"denied{RED}{HTML}", error=f"AccessDenied{RED}{HTML}"),
        _record(12, EVIL, "ListBuckets", "s3.amazonaws.com", {}, name_as=f"evil-{EVIL_NAME}", agent=OSC8),
        _record(13, FORMULA_ROLE, "ListBuckets", "s3.amazonaws.com", {}, name_as=FORMULA),
        _record(14, APP, f"Get{RED}Thing[/]:secret:", "evil.amazonaws.com", {}),  # unmapped: listed by coverage
    ]
    return recs


def _snapshot() -> dict:
    """IAM grants for the hostile roles, plus a never-used role and a policy whose names are hostile."""
    broad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*", "iam:PassRole"],
                                                     "Resource": "*"}]}

    def role(arn: str, name: str, policy: str) -> dict:
        return {"RoleName": name, "Arn": arn, "Path": "/", "CreateDate": "2026-01-01T00:00:00Z",
                "AttachedManagedPolicies": [], "RolePolicyList": [{"PolicyName": policy, "PolicyDocument": broad}]}

    return {"RoleDetailList": [role(APP, "hostile-app", FORMULA), role(EVIL, f"evil-{EVIL_NAME}", f"p{RED}"),
                               role(f"arn:aws:iam::{ACCT}:role/idle-{HTML}", f"@SUM(1+1)idle-{HTML}{RED}", "-2+3")],
            "UserDetailList": [], "Policies": []}


def run(*args):
    """Invoke the CLI (stdout and stderr apart)."""
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The hostile logs (and a skipped file with a hostile name) ingested by ``miner ingest``; an IAM snapshot."""
    root = tmp_path_factory.mktemp("hostile")
    logs = root / "logs"
    logs.mkdir()
    (logs / "trail.json").write_text(json.dumps({"Records": hostile_records()}))
    (logs / f"notes{RED}[red]:secret:.csv").write_text("a,b\n")  # skipped: its name is quoted in the summary
    (root / "iam.json").write_text(json.dumps(_snapshot()))
    ingest = run("ingest", logs, "--store", root / "store", "--processes", "1")
    assert ingest.exit_code == 0, ingest.output
    return {"store": root / "store", "iam": root / "iam.json", "ingest": ingest}


def assert_terminal_safe(text: str) -> None:
    """No character a terminal could act on (only line breaks), no rich markup error, no emoji substitution."""
    assert text.replace("\n", "").isprintable(), [c for c in text if not c.isprintable() and c != "\n"][:5]
    assert "\u3299" not in text and "Traceback" not in text


# ----------------------------------------------------------------------------- item 9: terminal


def test_usage_prints_keys_and_user_agents_as_plain_text(hostile):
    """Reproduction: a key report[/].csv crashed `miner usage` (MarkupError); ESC/OSC-8 reached the terminal raw;
    :secret: in an ARN became an emoji."""
    r = run("usage", "--role", "hostile-app", "--store", hostile["store"], *WINDOW)
    assert r.exit_code == 0, r.output
    assert_terminal_safe(r.stdout + r.stderr)
    assert "report[/].csv" in r.stdout and "a\\nb\\r\\tc" in r.stdout and SECRET in r.stdout
    for shown in [*KEYS, f"Boto3 {RED}red{OSC8} {HTML} [/]"]:
        assert escape.visible(shown) in r.stdout, shown


def test_suggest_summary_diff_and_error_messages_show_control_characters(hostile):
    r = run("suggest", "--principal", EVIL, "--store", hostile["store"], *WINDOW)
    assert r.exit_code == 0, r.output
    assert_terminal_safe(r.stdout + r.stderr)
    assert f"principal:  {escape.visible(EVIL)}" in r.stderr
    r = run("suggest", "--role", "hostile-app", "--store", hostile["store"], *WINDOW, "--diff",
            "--iam-snapshot", hostile["iam"])
    assert r.exit_code == 0, r.output
    assert_terminal_safe(r.stdout + r.stderr)
    assert f"denied{escape.visible(RED)}{HTML}" in r.stderr and "inline =HYPERLINK" in r.stdout
    # an error message that quotes names from the store: "did you mean" lists the close (hostile) names
    r = run("usage", "--role", f"evil-`x`{HTML}{IMG}[/]:secret:", "--store", hostile["store"], *WINDOW)
    assert r.exit_code == 2 and "did you mean" in r.stderr
    assert_terminal_safe(r.stderr)
    assert escape.visible(EVIL_NAME) in r.stderr


def test_ingest_coverage_review_and_backtest_summaries_are_plain_text(hostile):
    assert_terminal_safe(hostile["ingest"].output)
    assert "notes\\x1b[31m[red]:secret:.csv" in hostile["ingest"].stderr
    r = run("coverage", "--unmapped", "--store", hostile["store"])
    assert r.exit_code == 0, r.output
    assert_terminal_safe(r.stdout + r.stderr)
    assert "evil:Get\\x1b[31m" in r.stdout and "[/]:secret:" in r.stdout  # (the column folds)
    r = run("review", "--store", hostile["store"], *WINDOW, "--format", "json")
    assert r.exit_code == 0 and "reviewed 3 principals" in r.stderr
    assert_terminal_safe(r.stdout + r.stderr)
    r = run("backtest", "--role", "hostile-app", "--store", hostile["store"], "--train", "4d", "--test", "20d",
            "--until", "2026-09-01")
    assert r.exit_code == 0, r.output
    assert_terminal_safe(r.stdout + r.stderr)


def test_terminal_text_never_holds_a_control_character():
    assert escape.visible("a\x1b[31m\x9b\u202e\U000e0001\n\t\\") == "a\\x1b[31m\\x9b\\u202e\\U000e0001\\n\\t\\"


# ----------------------------------------------------------------------------- item 10: Markdown, CSV, HTML


class _Tags(HTMLParser):
    """The elements and attributes of an HTML document, and its text."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _assert_no_active_html(html: str, allowed: set[str]) -> _Tags:
    """Only our own elements: no image, script or link, no event handler, no remote reference."""
    doc = _Tags(html)
    assert {t for t, _ in doc.tags} <= allowed, {t for t, _ in doc.tags} - allowed
    for tag, attrs in doc.tags:
        assert not any(a.startswith("on") or a == "src" for a in attrs), (tag, attrs)
        assert attrs.get("href", "#").startswith("#"), (tag, attrs)
    return doc


def render_md(text: str) -> str:
    """Markdown as a CommonMark + GFM-tables renderer (raw HTML on, as on GitHub before sanitising) shows it."""
    return MarkdownIt("commonmark").enable("table").render(text)


def test_review_markdown_renders_logged_values_as_text(hostile):
    """Reproduction: forged names with backticks or <img onerror> ran script, ![img](http://...) cells were
    remote beacons, when the review Markdown was rendered."""
    r = run("review", "--store", hostile["store"], *WINDOW, "--iam-snapshot", hostile["iam"], "--format", "md")
    assert r.exit_code == 0, r.output
    assert_terminal_safe(r.stdout)
    doc = _assert_no_active_html(render_md(r.stdout), {
        "h1", "h2", "p", "ul", "li", "strong", "blockquote", "table", "thead", "tbody", "tr", "th", "td", "code",
        "pre", "details", "summary"})
    text = "".join(doc.text)
    assert escape.visible(f"evil-{EVIL_NAME}") in text and f"@SUM(1+1)idle-{HTML}\\x1b[31m" in text and FORMULA in text


def test_review_and_usage_csv_cells_are_never_formulas(hostile):
    """Reproduction: CSV cells starting = @ + - (tab, CR) were formulas in a spreadsheet."""
    outputs = [run("review", "--store", hostile["store"], *WINDOW, "--iam-snapshot", hostile["iam"], "--format", "csv"),
               run("principals", "--store", hostile["store"], *WINDOW, "--format", "csv"),
               run("usage", "--role", "hostile-app", "--store", hostile["store"], *WINDOW, "--format", "csv")]
    cells = []
    for r in outputs:
        assert r.exit_code == 0, r.output
        assert_terminal_safe(r.stdout)
        assert all(line.startswith('"') for line in r.stdout.splitlines())  # every cell quoted
        cells += [c for row in csv.reader(io.StringIO(r.stdout)) for c in row]
    assert not [c for c in cells if c.startswith(escape.CSV_FORMULA_START)]
    for neutralised in (f"'{FORMULA}", "'@SUM(1+1)idle-", f"arn:aws:s3:::orders-bucket/{FORMULA}"):
        assert any(neutralised in c for c in cells), neutralised


def test_review_html_still_escapes_the_payloads(hostile, tmp_path):
    page = tmp_path / "review.html"
    r = run("review", "--store", hostile["store"], *WINDOW, "--iam-snapshot", hostile["iam"], "--out", page)
    assert r.exit_code == 0, r.output
    assert_terminal_safe(r.stdout + r.stderr)
    doc = _assert_no_active_html(page.read_text(), {
        "html", "head", "meta", "title", "style", "body", "header", "footer", "h1", "h2", "h3", "dl", "dt", "dd", "div", "section",
        "p", "b", "code", "span", "a", "table", "thead", "tbody", "tr", "th", "td", "ul", "li", "details", "summary",
        "pre", "figure", "figcaption", "svg", "rect", "line", "text", "title", "wbr"})
    assert escape.visible(f"evil-{EVIL_NAME}") in "".join(doc.text)


# ----------------------------------------------------------------------------- item 11: Terraform, YAML, JSON


def hcl_unquote(literal: str) -> str:
    """The value of an HCL quoted string literal without interpolations (hashicorp/hcl spec: string escapes,
    ``$${``/``%%{`` template escapes); raises on a raw line break, control character or template sequence."""
    assert literal[0] == literal[-1] == '"'
    body, out, i = literal[1:-1], [], 0
    simple = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        c = body[i]
        if c == "\\":
            kind = body[i + 1]
            if kind in simple:
                out.append(simple[kind])
                i += 2
            else:
                width = {"u": 4, "U": 8}[kind]
                out.append(chr(int(body[i + 2:i + 2 + width], 16)))
                i += 2 + width
        elif body.startswith(("$${", "%%{"), i):
            out.append(body[i + 1:i + 3])
            i += 3
        elif body.startswith(("${", "%{"), i) or c == '"' or not c.isprintable():
            raise ValueError(f"not a plain HCL string: {body!r} at {i}")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _policy_resources(doc) -> set[str]:
    docs = doc if isinstance(doc, list) else [doc]
    return {r for d in docs for s in d["Statement"] for r in ([s["Resource"]] if isinstance(s["Resource"], str)
                                                                else s["Resource"])}


@pytest.fixture(scope="module")
def policies(hostile) -> dict[str, str]:
    """hostile-app's policy in each format."""
    texts = {}
    for fmt in ("json", "terraform", "cloudformation"):
        r = run("suggest", "--role", "hostile-app", "--store", hostile["store"], *WINDOW, "--format", fmt, "-q")
        assert r.exit_code == 0, r.output
        texts[fmt] = r.stdout
    return texts


def test_policy_formats_give_back_the_exact_logged_values(policies):
    """Reproduction: a key holding \\n or \\r produced an HCL string Terraform rejects."""
    expected = {f"arn:aws:s3:::orders-bucket/{k}" for k in KEYS} | {SECRET}
    from_json = _policy_resources(json.loads(policies["json"]))
    assert from_json == expected
    literals = [line.strip().removeprefix("resources = [").rstrip("],") for line in policies["terraform"].splitlines()
                if line.strip().startswith('"') or line.strip().startswith('resources = ["')]
    assert {hcl_unquote(lit) for lit in literals} == expected
    cfn = yaml.safe_load(policies["cloudformation"])["Resources"]
    assert _policy_resources([r["Properties"]["PolicyDocument"] for r in cfn.values()]) == expected
    for text in policies.values():
        assert_terminal_safe(text)


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_terraform_reads_the_hcl_strings_back(tmp_path):
    values = KEYS + ["${x}", "$${x}", "%{y}", "\\${x}", "\x00\x7f\U000e0001", "$", "%"]
    expected = base64.b64encode(json.dumps(values).encode()).decode()
    expr = f"[{', '.join(map(escape.hcl_string, values))}] == jsondecode(base64decode(\"{expected}\"))\n"
    res = subprocess.run(["terraform", "console"], input=expr, capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    assert res.stdout.strip() == "true", res.stderr


# ----------------------------------------------------------------------------- properties of the escapers

text = st.text(st.characters(codec="utf-8"), max_size=40)


@given(text)
def test_visible_output_is_printable_and_printable_text_is_unchanged(s):
    v = escape.visible(s)
    assert v.isprintable() and (v == s) == s.isprintable()


@given(text)
@settings(max_examples=150)
def test_markdown_text_and_code_render_as_the_visible_text(s):
    paragraph = _Tags(render_md(f"x {escape.markdown_text(s)} x"))
    assert [t for t, _ in paragraph.tags] == ["p"] and "".join(paragraph.text) == f"x {escape.visible(s)} x\n"
    if s:
        inline = _Tags(render_md(f"x {escape.markdown_code(s, in_table=False)} x"))
        assert [t for t, _ in inline.tags] == ["p", "code"] and "".join(inline.text) == f"x {escape.visible(s)} x\n"
        cell = _Tags(render_md(f"| h |\n|---|\n| {escape.markdown_code(s)} |\n"))
        assert [t for t, _ in cell.tags if t in ("td", "code")] == ["td", "code"]
        assert escape.visible(s) in "".join(cell.text)


@given(st.lists(text, min_size=1, max_size=4))
def test_csv_cells_round_trip_and_never_start_a_formula(cells):
    rows = list(csv.reader(io.StringIO(escape.csv_text(["h"] * len(cells), [cells]))))
    assert rows[1] == [escape.csv_cell(c) for c in cells]
    for raw, got in zip(cells, rows[1]):
        assert not got.startswith(escape.CSV_FORMULA_START)
        assert got in (escape.visible(raw), "'" + escape.visible(raw))


@given(text)
def test_html_json_yaml_and_hcl_escapes_read_back(s):
    assert unescape(escape.html(s)) == escape.visible(s) and "<" not in escape.html(s)
    for dumped, load in ((escape.json_text({"k": [s]}, indent=2), json.loads), (escape.yaml_text({"k": [s]}),
                                                                                 yaml.safe_load)):
        assert load(dumped) == {"k": [s]} and dumped.replace("\n", "").isprintable()
    literal = escape.hcl_string(s)
    assert hcl_unquote(literal) == s and literal.isprintable()
