"""The ``miner`` command line: parses options, calls the library, formats output."""

from __future__ import annotations

import functools
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console
from rich.text import Text

from miner import __version__, models
from miner.escape import csv_text, json_safe, json_text, visible

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Mine least-privilege IAM policies from AWS CloudTrail logs.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: [default: ...] and Operations[] print as written
)


def _console(**kwargs) -> Console:
    """A rich console that never reads markup, emoji codes or highlights in what it prints."""
    return Console(markup=False, emoji=False, highlight=False, **kwargs)


#: Results go to stdout; summaries, progress and errors go to stderr.
out = _console(soft_wrap=True)
err = _console(stderr=True, soft_wrap=True)

StoreOpt = typer.Option(None, "--store", help="Parquet store directory [default: $MINER_STORE or ~/.local/share/miner/store].")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr (for scripts).")


class UserError(Exception):
    """A mistake the user can fix; printed as one clear message, never a traceback."""


def plain(text: object, style: str = "") -> Text:
    """Text that may hold logged values, for rich: printed as is (no markup, no emoji), control characters visible."""
    return Text(visible(str(text)), style=style)


def say(console: Console, line: str) -> None:
    """Print one line that may hold logged values (see :func:`plain`)."""
    console.print(plain(line))


def _error_text(message: str) -> Text:
    """``error: message``; the message's own line breaks are kept, every other control character is made visible."""
    return Text.assemble(("error:", "bold red"), " ", "\n".join(visible(line) for line in str(message).split("\n")))


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error message to stderr (plain text, control characters visible) and exit."""
    err.print(_error_text(message))
    raise typer.Exit(code)


def store_path(store: Optional[Path]) -> Path:
    """The store directory from ``--store`` or the default."""
    return store if store is not None else models.default_store_path()


def utc_now() -> datetime:
    """The current time (one place, so commands never default to it at import)."""
    return datetime.now(timezone.utc)


def window(since: Optional[str], until: Optional[str], default_days: int = 90) -> models.Window:
    """Parse ``--since``/``--until`` into a window, or fail with the reason."""
    try:
        return models.make_window(since, until, utc_now(), default_days)
    except ValueError as e:
        fail(str(e))


def print_json(obj) -> None:
    """Write strict JSON to stdout (plain, no colour), for scripts: NaN and infinities as null."""
    sys.stdout.write(json.dumps(json_safe(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")


def _vanished_file(e: Exception) -> bool:
    """Whether a query failed because a file it had listed was gone when it was opened."""
    import duckdb

    return isinstance(e, duckdb.IOException) and "Cannot open file" in str(e)


def retry_if_store_changes(command):
    """Run a command that reads the store once more when a file it listed vanished before it was read (something
    other than ``miner ingest``, which never removes a published file, changed the store meanwhile)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        for attempt in (1, 2):
            try:
                return command(*args, **kwargs)
            except Exception as e:
                if not _vanished_file(e):
                    raise
                if attempt == 2:
                    fail(f"the store changed while it was read, twice ({e}); run the command again")

    return run


# ----------------------------------------------------------------------------- ingest
# (section owned by the ingest stage)


@app.command("ingest")
def ingest_cmd(
    sources: list[str] = typer.Argument(..., metavar="SOURCE...",
                                        help="Local files or folders, and/or S3 URIs: s3://bucket or "
                                             "s3://bucket/prefix."),
    store: Optional[Path] = StoreOpt,
    since: Optional[str] = typer.Option(
        None, "--since", help="Keep records from this time (date, timestamp or age like 30d) "
                              "[default: everything for local files, the last 7 days for S3]."),
    until: Optional[str] = typer.Option(None, "--until", help="Keep records before this time (a bare date includes "
                                                              "that day) [default: now]."),
    account: list[str] = typer.Option([], "--account", help="Only this account id (repeatable)."),
    region: list[str] = typer.Option([], "--region", help="Only this region (repeatable)."),
    workers: int = typer.Option(16, "--workers", min=1, help="Parallel S3 downloads."),
    processes: Optional[int] = typer.Option(None, "--processes", min=1,
                                            help="Parser processes [default: the CPUs available]."),
    profile: Optional[str] = typer.Option(None, "--profile", help="AWS profile for S3 (standard credential chain "
                                                                  "otherwise)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url",
                                               help="S3 endpoint URL (S3-compatible storage, a local moto server)."),
    s3_region: Optional[str] = typer.Option(None, "--s3-region", help="Region of the S3 client [default: from the "
                                                                      "AWS config; S3 redirects to the bucket's]."),
    max_object_size: str = typer.Option("256MiB", "--max-object-size",
                                        help="Skip objects larger than this once decompressed (e.g. 64MiB, 1G); a "
                                             "gzip stops inflating there."),
    quiet: bool = QuietOpt,
    as_json: bool = typer.Option(False, "--json", help="Print a machine-readable summary on stdout."),
) -> None:
    """Ingest CloudTrail logs into the Parquet store: only new objects, deduplicated on eventID, crash-safe.

    Example: miner ingest sample_logs --store ./miner-store

    Example: miner ingest s3://acme-trail-logs --since 30d --region us-east-1 --profile audit

    Reads S3 delivery trees (AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/, organization trails included), \
listing only the day folders in the window; and local .json/.json.gz files holding {"Records": ...}, JSON \
arrays, NDJSON or EventBridge envelopes. Files that cannot be used are skipped with their reason; a re-run \
reads only objects not yet in the store's manifest. Exit status 2 when a source is missing or unreachable, \
or when no file held CloudTrail records.
    """
    from miner import ingest as ing
    from miner.store import StoreError

    win = None
    if since or until:  # only --until: everything before it locally, the S3 default span before it for S3
        s3 = any(s.startswith("s3://") for s in sources)
        win = window(since, until, default_days=ing.S3_DEFAULT_DAYS) if s3 and not since else \
            window(since or "1970-01-01", until)
    try:
        max_bytes = models.parse_size(max_object_size)
    except ValueError as e:
        fail(f"--max-object-size: {e}")
    target = store_path(store)
    progress_cb = None
    bar = None
    if not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]ingest[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                       TextColumn("{task.fields[records]:>12,} records"), TimeElapsedColumn(),
                       console=err, transient=True)
        task = bar.add_task("ingest", total=None, records=0)

        def progress_cb(p: "ing.Progress") -> None:
            if not bar.live.is_started:  # started at the first report: parser processes fork before its thread
                bar.start()
            bar.update(task, total=max(p.files_total, 1), completed=p.files_done, records=p.records)

    try:
        report = ing.ingest(sources, target, window=win, accounts=account, regions=region, workers=workers,
                            processes=processes, profile=profile, endpoint_url=endpoint_url, s3_region=s3_region,
                            progress=progress_cb, max_object_size=max_bytes)
    except (ing.IngestError, StoreError) as e:
        if bar is not None:
            bar.stop()
        fail(str(e))
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        fail("interrupted: the store holds what was committed; run the same command again to finish", code=130)
    if bar is not None:
        bar.stop()
    code, verdict = report.outcome()
    if as_json:
        print_json(report.to_dict())
    if not quiet:
        _print_ingest_summary(report, verdict)
    if code:
        fail(verdict, code)


def _print_ingest_summary(report, verdict: str) -> None:
    """The human summary of an ingest run (stderr)."""
    pruned = ", ".join(f"{v} {k}" for k, v in sorted(report.trees_skipped.items()))
    err.print(Text.assemble(plain(verdict, "bold"), plain(f" in {report.store} ({report.seconds:.1f} s)")))
    if report.window:
        say(err, f"  window:   {report.window}")
    say(err, f"  files:    {report.files_seen:,} seen, {report.files_read:,} read, "
        f"{report.files_already_ingested:,} already ingested, {report.files_skipped:,} skipped"
        + (f", {report.files_filtered:,} outside the window/filters" if report.files_filtered else "")
        + (f" (trees not read: {pruned})" if pruned else ""))
    say(err, f"  records:  {report.records_read:,} read, {report.records_written:,} written, "
        f"{report.duplicates:,} duplicates, {report.records_skipped:,} skipped"
        + (f", {report.records_filtered:,} outside the window/filters" if report.records_filtered else ""))
    if report.s3_list_requests:
        say(err, f"  S3:       {report.s3_list_requests:,} list requests")
    groups = report.skipped_groups()
    if groups:
        say(err, "  skipped:")
        for reason, g in groups.items():
            what = f"{g['files']:,} file{'s' if g['files'] != 1 else ''}"
            if g["records"]:
                what = f"{g['records']:,} records in {what}"
            say(err, f"    {reason}: {what}  e.g. {g['examples'][0]}")
    for r in report.recovered[:5]:
        say(err, f"  recovered {r.records:,} records from invalid JSON: {r.source}")
    for note in report.notes:
        say(err, f"  note: {note}")

# ----------------------------------------------------------------------------- mapping: coverage, catalog
# (section owned by the mapping stage)

ServiceRefOpt = typer.Option(
    None, "--service-reference", metavar="DIR",
    help="Folder of AWS Service Reference JSON files (per service, Operations[].AuthorizedActions) whose answers "
         "take precedence over the built-in rules [default: $MINER_SERVICE_REFERENCE, else fully offline].")


def _map_mapper(service_reference: Optional[Path]):
    """The mapper for --service-reference (or the environment), failing with a clear message."""
    from miner import mapping

    try:
        return mapping.get_mapper(str(service_reference) if service_reference is not None else None)
    except FileNotFoundError as e:
        fail(f"{e}: give a folder of service reference files (e.g. s3.json, lambda.json)")


@app.command("coverage")
@retry_if_store_changes
def coverage_cmd(
    store: Optional[Path] = StoreOpt,
    since: Optional[str] = typer.Option(None, "--since", help="Window start (date, timestamp or age like 90d) [default: all]."),
    until: Optional[str] = typer.Option(None, "--until", help="Window end (a bare date includes that day) [default: now]."),
    unmapped: bool = typer.Option(False, "--unmapped", help="List only the events that map to no action (the gaps)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    service_reference: Optional[Path] = ServiceRefOpt,
    quiet: bool = QuietOpt,
) -> None:
    """How well the stored events map to IAM actions and resource ARNs, per event source and name.

    Example: miner coverage --store ./miner-store --unmapped

    Columns: events; status (mapped, no_permission, service_event, not_api_call, unmapped); the actions; how many
    events got their resource from the record's ARN, from a template filled from request parameters, or "*"
    (n/a: the action has no resource-level permissions).
    """
    from miner import mapping, store as st

    if fmt not in ("table", "json"):
        fail(f"unknown --format {fmt!r}: use table or json")
    mapper = _map_mapper(service_reference)
    win_since = win_until = None
    if since or until:
        w = window(since or "1970-01-01", until, default_days=90)
        win_since, win_until = w.since, w.until
    try:
        con = st.connect(store_path(store))
    except st.StoreError as e:
        fail(str(e))
    cov = mapping.coverage(con, win_since, win_until, mapper=mapper)
    if fmt == "json":
        print_json(cov.to_dict(unmapped_only=unmapped))
        return
    from rich.table import Table

    df = cov.unmapped() if unmapped else cov.by_event
    table = Table(title="unmapped events (gaps)" if unmapped else "mapping coverage", show_lines=False)
    table.add_column("event", overflow="fold")
    table.add_column("events", justify="right")
    table.add_column("status")
    if unmapped:
        table.add_column("why", overflow="fold")
    else:
        table.add_column("actions", overflow="fold")
        for col in ("record ARN", "template", "*", "n/a"):
            table.add_column(col, justify="right")
    for r in df.itertuples(index=False):
        event = f"{str(r.event_source).removesuffix('.amazonaws.com')}:{r.event_name}"
        if unmapped:
            cells = [event, f"{r.events:,}", r.status, str(r.note or "")]
        else:
            cells = [event, f"{r.events:,}", r.status, ", ".join(r.actions) or "-", f"{r.record_arn:,}",
                     f"{r.template:,}", f"{r.star:,}", f"{r.no_resource_level:,}"]
        table.add_row(*map(plain, cells))
    out.print(table)
    if not quiet:
        s = cov.summary
        t = s["authorised_non_service_api_calls"]

        def pct(x):
            return "n/a" if x is None else f"{100 * x:.2f}%"

        say(err, f"{s['events']:,} events, {s['event_kinds']} kinds: "
            + ", ".join(f"{k} {v:,}" for k, v in s["by_status"].items()))
        say(err, f"mapped: {pct(s['mapped_share'])} of events that need a permission; resource ARN narrower than *: "
            f"{pct(s['narrow_share'])} of {s['resource_level_events']:,} events whose action supports resources")
        say(err, f"authorised, non-service API calls: {t['events']:,}; mapped {pct(t['mapped_share'])}; narrower than *: "
            f"{pct(t['narrow_share'])}")
        say(err, f"versions: {s['versions']}")


@app.command("catalog")
def catalog_cmd(
    service_reference: Optional[Path] = ServiceRefOpt,
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
) -> None:
    """Show the IAM catalogue, mapping rules and (optional) service reference in use.

    Example: miner catalog --service-reference ./aws-service-reference --format json
    """
    from miner import mapping

    if fmt not in ("table", "json"):
        fail(f"unknown --format {fmt!r}: use table or json")
    mapper = _map_mapper(service_reference)
    cat = mapper.catalog
    rules = mapper.rules
    info = {
        "catalog": {"version": cat.version, "services": len(cat.prefixes)},
        "mapping_rules": {"version": rules.version, "directory": rules.directory,
                          "rows": {name: len(rows) for name, rows in rules.rows.items()}},
        "botocore": {"version": mapper.models.version},
        "service_reference": None,
        "precedence": "service reference (where it names the operation) > rules.csv > direct prefix:EventName "
                      "> versioned names" if mapper.service_reference is not None
                      else "rules.csv > direct prefix:EventName > versioned names (offline)",
    }
    ref = mapper.service_reference
    if ref is not None:
        info["service_reference"] = {"directory": ref.directory, "version": ref.version,
                                     "services": sorted(ref.services), "operations": len(ref.operations),
                                     "problems": ref.problems}
    if fmt == "json":
        print_json(info)
        return
    say(out, f"catalogue          {info['catalog']['version']} ({info['catalog']['services']} services)")
    say(out, f"mapping rules      {rules.version} ({rules.directory})")
    for name, n in info["mapping_rules"]["rows"].items():
        say(out, f"  {name:<16} {n} rows")
    say(out, f"botocore models    {info['botocore']['version']}")
    if ref is None:
        say(out, "service reference  none (offline; set --service-reference DIR or $MINER_SERVICE_REFERENCE)")
    else:
        say(out, f"service reference  {ref.directory}: {ref.version}, {len(ref.operations)} operations "
            f"({', '.join(sorted(ref.services)) or '-'})")
        for p in ref.problems:
            say(err, f"  skipped {p}")
    say(out, f"precedence         {info['precedence']}")
    _ = mapping

# ----------------------------------------------------------------------------- principals, usage, suggest
# (section owned by the suggest stage)

SinceOpt = typer.Option(None, "--since", help="Window start: a date, a timestamp or an age (90d, 12w) [default: 90 days before --until].")
UntilOpt = typer.Option(None, "--until", help="Window end (a bare date counts whole) [default: now].")
RoleOpt = typer.Option(None, "--role", help="Role name (or role ARN).")
UserOpt = typer.Option(None, "--user", help="IAM user name (or user ARN).")
PrincipalOpt = typer.Option(None, "--principal", help="Principal ARN as stored (role, user, root, ...).")
AccountOpt = typer.Option(None, "--account", help="Account id, when a name exists in several accounts.")


def _open_store(store: Optional[Path]):
    """A DuckDB connection over the store, or a clear error."""
    from miner.store import StoreError, connect

    try:
        con = connect(store_path(store))
    except StoreError as e:
        fail(str(e))
    con.execute("SET parquet_metadata_cache = true")  # several queries read the same file footers
    return con


def _principal(con, win, role, user, principal, account):
    """Resolve the principal options, or fail with close names."""
    from miner.usage import PrincipalError, resolve_principal

    try:
        return resolve_principal(con, win, role=role, user=user, principal=principal, account=account)
    except PrincipalError as e:
        fail(str(e))


def _check_format(fmt: str, allowed: tuple[str, ...]) -> str:
    fmt = fmt.lower()
    if fmt not in allowed:
        fail(f"--format must be one of {', '.join(allowed)} (got {fmt!r})")
    return fmt


def _records(df) -> list[dict]:
    """A DataFrame as JSON-ready records (timestamps as ISO text, numpy scalars as Python)."""
    return json.loads(df.to_json(orient="records", date_format="iso", date_unit="s"))


def _is_list(v) -> bool:
    return hasattr(v, "tolist") or isinstance(v, (list, tuple))


def _emit_frame(df, fmt: str, title: str, columns: list[str]) -> None:
    """Print a frame as a rich table, JSON records or CSV."""
    df = df[columns]
    if fmt == "json":
        print_json(_records(df))
    elif fmt == "csv":
        flat = df.astype(object).where(df.notna(), None)
        sys.stdout.write(csv_text(columns, ([",".join(map(str, list(v))) if _is_list(v) else v for v in row]
                                            for row in flat.itertuples(index=False))))
    else:
        from rich.table import Table

        table = Table()
        console = out if out.is_terminal else _console(width=400)  # pipes and files: never truncate cells
        if title:
            console.print(plain(title, "bold"))
        for c in columns:
            table.add_column(c, justify="right" if str(df[c].dtype).startswith(("int", "float")) else "left")
        for row in df.itertuples(index=False):
            cells = []
            for v in row:
                if _is_list(v):
                    v = ", ".join(map(str, list(v)))
                elif hasattr(v, "strftime"):
                    v = v.strftime("%Y-%m-%d %H:%M")
                elif isinstance(v, int):
                    v = f"{v:,}"
                cells.append(plain("" if v is None or (isinstance(v, float) and v != v) else v))
            table.add_row(*cells)
        console.print(table)


@app.command("principals")
@retry_if_store_changes
def principals_cmd(
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    fmt: str = typer.Option("table", "--format", help="table, json or csv."),
    store: Optional[Path] = StoreOpt,
) -> None:
    """List the principals that acted in the window: type, events, first/last seen, services used.

    Example: miner principals --since 2026-08-01 --until 2026-09-14 --format csv
    """
    from miner import usage

    fmt = _check_format(fmt, ("table", "json", "csv"))
    win = window(since, until)
    con = _open_store(store)
    df = usage.principals(con, win)
    if df.empty:
        fail(f"no events in the window {win}: widen --since/--until")
    _emit_frame(df, fmt, f"principals, {win}", ["principal_arn", "principal_type", "events", "denied", "first_seen",
                                                "last_seen", "services"])


@app.command("usage")
@retry_if_store_changes
def usage_cmd(
    role: Optional[str] = RoleOpt,
    user: Optional[str] = UserOpt,
    principal: Optional[str] = PrincipalOpt,
    account: Optional[str] = AccountOpt,
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    fmt: str = typer.Option("table", "--format", help="table, json or csv (csv: the action rows)."),
    top: int = typer.Option(5, "--top", help="How many source IP / user agent pairs to show."),
    store: Optional[Path] = StoreOpt,
) -> None:
    """What one principal did in the window: actions and resources, counts, first/last seen, regions, and from where.

    Example: miner usage --role orders-api-task --since 90d
    """
    from miner import usage

    fmt = _check_format(fmt, ("table", "json", "csv"))
    win = window(since, until)
    con = _open_store(store)
    who = _principal(con, win, role, user, principal, account)
    used = usage.collect(con, who, win)
    src = usage.sources(con, who.arn, win, top)
    cols = ["action", "resource", "calls", "first_seen", "last_seen", "regions", "outcomes"]
    if fmt == "json":
        print_json({"principal": who.arn, "window": {"since": win.since.isoformat(), "until": win.until.isoformat()},
                    "events": used.events, "authorised_events": used.authorised_events,
                    "denied_events": used.denied_events, "actions": _records(used.authorised[cols + ["operations"]]),
                    "denied": _records(used.denied[cols]), "sources": _records(src), "unmapped": _records(used.unmapped),
                    "no_permission": _records(used.no_permission)})
        return
    if fmt == "csv":
        _emit_frame(used.actions, "csv", "", ["outcome_class"] + cols + ["operations"])
        return
    say(err, f"{who.arn} ({who.type}) · {win} · {used.events:,} events, {used.denied_events:,} denied")
    _emit_frame(used.authorised, "table", "authorised calls", cols)
    if len(used.denied):
        _emit_frame(used.denied, "table", "denied calls (not granted)", cols)
    if len(used.unmapped):
        _emit_frame(used.unmapped, "table", "calls that map to no IAM action", ["event_source", "event_name", "calls", "note"])
    _emit_frame(src, "table", "from where (top source IP / user agent)", ["source_ip", "user_agent", "events", "first_seen", "last_seen"])


def _write_policy_files(suggestion, fmt: str, text: str, path: Path, quiet: bool) -> None:
    """Write the policy to ``--out``; a split JSON policy goes to numbered sibling files (one document each)."""
    from miner.synthesize import to_json

    if fmt == "json" and len(suggestion.policies) > 1:
        for i, doc in enumerate(suggestion.policies, 1):
            target = path.with_name(f"{path.stem}-{i}{path.suffix or '.json'}")
            target.write_text(json_text(doc, indent=2) + "\n", encoding="utf-8")
            if not quiet:
                say(err, f"wrote {target}")
        return
    path.write_text(text if fmt != "json" else to_json(suggestion), encoding="utf-8")
    if not quiet:
        say(err, f"wrote {path}")


@app.command("suggest")
@retry_if_store_changes
def suggest_cmd(
    role: Optional[str] = RoleOpt,
    user: Optional[str] = UserOpt,
    principal: Optional[str] = PrincipalOpt,
    account: Optional[str] = AccountOpt,
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    fmt: Optional[str] = typer.Option(None, "--format", help="Policy: json (IAM JSON), terraform, cloudformation. "
                                      "With --diff: text (default) or json (the report). [default: json, or from --out's extension]"),
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write the policy here (.json, .tf, .yaml) instead of stdout."),
    max_resources: int = typer.Option(10, "--max-resources", help="Generalise more than N resources of one kind to a common prefix (0: never)."),
    no_wildcards: bool = typer.Option(False, "--no-wildcards", help="List every action; no action wildcards."),
    do_diff: bool = typer.Option(False, "--diff", help="Compare with the policies attached now (live IAM, or --iam-snapshot)."),
    iam_snapshot: Optional[Path] = typer.Option(None, "--iam-snapshot", help="`aws iam get-account-authorization-details` output: a file, or a dir with one file per account."),
    profile: Optional[str] = typer.Option(None, "--profile", help="AWS profile for live IAM."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="IAM endpoint for live reads (e.g. a local moto server)."),
    fail_on_unused: bool = typer.Option(False, "--fail-on-unused", help="With --diff: exit 1 when unused grants exist (for CI)."),
    store: Optional[Path] = StoreOpt,
    quiet: bool = QuietOpt,
) -> None:
    """A least-privilege policy from the principal's AUTHORISED calls in the window (default: the last 90 days).

    Example: miner suggest --role ci-deploy --since 90d --diff --iam-snapshot iam/ --format terraform
    """
    from dataclasses import asdict

    from miner import diff as diffmod
    from miner import iam, usage
    from miner import synthesize as syn

    by_ext = {".tf": "terraform", ".yaml": "cloudformation", ".yml": "cloudformation", ".json": "json"}
    policy_fmt = by_ext.get(out_file.suffix.lower(), "json") if out_file else "json"
    report_fmt = "text"
    if fmt:
        allowed = ("text", "json", "terraform", "cloudformation") if do_diff else ("json", "terraform", "cloudformation")
        fmt = _check_format(fmt, allowed)
        if do_diff and fmt in ("text", "json"):
            report_fmt = fmt
        else:
            policy_fmt = fmt
    if fail_on_unused and not do_diff:
        fail("--fail-on-unused needs --diff")
    if max_resources < 0:
        fail("--max-resources must be 0 or more")
    win = window(since, until)
    con = _open_store(store)
    who = _principal(con, win, role, user, principal, account)
    used = usage.collect(con, who, win)
    authorised = used.authorised
    if not used.events:
        fail(f"{who.arn} has no events in the window {win}: widen --since/--until")
    if authorised.empty:
        fail(f"{who.arn} made no authorised calls that map to IAM actions in the window {win} "
             f"({used.why_no_policy()}): no policy to suggest")
    suggestion = syn.synthesize(authorised, max_resources=max_resources, wildcards=not no_wildcards)
    if not quiet:
        for line in syn.summary_lines(suggestion, principal_arn=who.arn, window=win, events=used.events,
                                      authorised_events=used.authorised_events, denied=used.denied, unmapped=used.unmapped,
                                      no_permission=used.no_permission):
            say(err, line)
        from miner.mapping import rules_version

        say(err, f"mapping:    {rules_version()} (miner {__version__})")
    description = f"Least-privilege policy for {who.arn} mined by miner from CloudTrail {win}"
    if policy_fmt == "terraform":
        text = syn.to_terraform(suggestion, who.short_name, description)
    elif policy_fmt == "cloudformation":
        kind = who.kind
        text = syn.to_cloudformation(suggestion, who.short_name, description=description,
                                     roles=[who.short_name] if kind == "role" else None,
                                     users=[who.short_name] if kind == "user" else None)
    else:
        text = syn.to_json(suggestion)
    if out_file:
        _write_policy_files(suggestion, policy_fmt, text, out_file, quiet)
    if not do_diff:
        if not out_file:
            sys.stdout.write(text)
        return
    try:
        attached = iam.from_snapshot(iam_snapshot, who.arn) if iam_snapshot else \
            iam.from_live(who.arn, profile=profile, endpoint_url=endpoint_url)
    except iam.IamError as e:
        fail(str(e))
    data_sources = usage.data_event_sources(con, win, account=who.account or iam.principal_parts(who.arn)[0])
    boundary = [attached.boundary.document] if attached.boundary and attached.boundary.document else None
    report = diffmod.compare(attached.documents, suggestion.policies, authorised, boundary=boundary,
                             denied=used.denied, data_sources=data_sources, principal_arn=who.arn,
                             principal_account=who.account, missing=attached.missing, source=attached.source,
                             policies=attached.refs)
    labels = [p.label for p in attached.policies] + ([f"boundary {attached.boundary.name}"] if attached.boundary else [])
    if report_fmt == "json":
        print_json({**report.to_dict(), "attached": labels,
                    "window": {"since": win.since.isoformat(), "until": win.until.isoformat()},
                    "catalog": suggestion.catalog_version, "policies": suggestion.policies,
                    "generalisations": [asdict(g) for g in suggestion.generalisations],
                    "fallbacks": [asdict(f) for f in suggestion.fallbacks]})
    else:
        sys.stdout.write(diffmod.render_text(report, attached=labels))
        if policy_fmt != "json" and not out_file:
            sys.stdout.write("\n" + text)
    if fail_on_unused and report.count("unused"):
        if not quiet:
            say(err, f"{report.count('unused')} unused grants (--fail-on-unused)")
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- review, backtest
# (section owned by the review stage)


def _rv_iam_source(iam_snapshot: Optional[Path], profile: Optional[str], endpoint_url: Optional[str], live: bool):
    """The IAM source chosen by the options (a snapshot, live IAM, or none)."""
    from miner import iam, review

    try:
        if iam_snapshot:
            return review.snapshot_source(iam_snapshot)
        if live or profile or endpoint_url:
            return review.live_source(profile, endpoint_url)
    except iam.IamError as e:
        fail(str(e))
    return None


_RvSnapshotOpt = typer.Option(None, "--iam-snapshot", help="`aws iam get-account-authorization-details` output: a file, or a dir with one file per account.")
_RvProfileOpt = typer.Option(None, "--profile", help="AWS profile: read grants live from IAM.")
_RvEndpointOpt = typer.Option(None, "--endpoint-url", help="IAM endpoint for live reads (e.g. a local moto server).")
_RvLiveOpt = typer.Option(False, "--live", help="Read grants live from IAM with the default AWS credentials.")


@app.command("review")
@retry_if_store_changes
def review_cmd(
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    out_file: Optional[Path] = typer.Option(None, "--out", help="Write the review here; the format follows the extension (.html, .md, .csv, .json)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="html, md, csv or json [default: from --out, else html]."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="A previous `--format json` review: show what changed since."),
    iam_snapshot: Optional[Path] = _RvSnapshotOpt,
    profile: Optional[str] = _RvProfileOpt,
    endpoint_url: Optional[str] = _RvEndpointOpt,
    live: bool = _RvLiveOpt,
    account: Optional[str] = typer.Option(None, "--account", help="Only principals of this account."),
    max_resources: int = typer.Option(10, "--max-resources", help="Suggested policies: generalise more than N resources of one kind."),
    no_wildcards: bool = typer.Option(False, "--no-wildcards", help="Suggested policies: no action wildcards."),
    store: Optional[Path] = StoreOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Quarterly right-sizing review: every role and user ranked by unused privilege and its risk.

    Example: miner review --since 90d --iam-snapshot iam/ --out review.html --compare last-quarter.json
    """
    from miner import report, review

    try:
        fmt = report.format_for(str(out_file) if out_file else None, fmt)
    except ValueError as e:
        fail(str(e))
    previous = None
    if compare:
        try:
            previous = review.load_review(compare)
        except ValueError as e:
            fail(str(e))
    win = window(since, until)
    con = _open_store(store)
    source = _rv_iam_source(iam_snapshot, profile, endpoint_url, live)
    rv = review.build_review(con, win, iam_source=source, store=store_path(store), account=account,
                             max_resources=max_resources, wildcards=not no_wildcards)
    if not rv["principals"]:
        fail(f"no roles or users acted in the window {win} and no IAM source lists any: widen --since/--until")
    changes = review.compare_reviews(previous, rv) if previous else None
    text = report.render(rv, fmt, changes)
    if out_file:
        out_file.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if not quiet:
        s = rv["summary"]
        grants = (f", {s['unused_actions']:,} unused granted actions, {s['high_risk']} high-risk grants "
                  f"(unused or used far more broadly than granted)"
                  if rv["grants_known"] else " (grants unknown: no --iam-snapshot or live IAM)")
        say(err, f"reviewed {s['principals']} principals in {win}: {s['active']} active, {s['never_used']} never used"
            f"{grants}" + (f"; {changes['summary']['changed_principals']} changed, "
                           f"{changes['summary']['new_principals']} new, {changes['summary']['gone_principals']} gone "
                           "since the previous review" if changes else "")
            + (f" -> {out_file}" if out_file else ""))


@app.command("backtest")
@retry_if_store_changes
def backtest_cmd(
    role: Optional[str] = RoleOpt,
    user: Optional[str] = UserOpt,
    principal: Optional[str] = PrincipalOpt,
    account: Optional[str] = AccountOpt,
    train: str = typer.Option("60d", "--train", help="Training window length (mine here)."),
    test: str = typer.Option("30d", "--test", help="Test window length (replay here), right after training."),
    until: Optional[str] = typer.Option(None, "--until", help="End of the test window [default: the midnight after the principal's last event]."),
    levels: str = typer.Option("1,10,50", "--max-resources", help="Comma-separated --max-resources levels to compare."),
    fmt: str = typer.Option("table", "--format", help="table or json; with --all also csv (one row per principal and setting)."),
    every: bool = typer.Option(False, "--all", help="Every IAM role and user with enough history, and each setting summarised over them."),
    min_days: str = typer.Option("30d", "--min-days", help="With --all: the history a principal needs before the end of its test window."),
    iam_snapshot: Optional[Path] = _RvSnapshotOpt,
    profile: Optional[str] = _RvProfileOpt,
    endpoint_url: Optional[str] = _RvEndpointOpt,
    live: bool = _RvLiveOpt,
    store: Optional[Path] = StoreOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Score suggested policies on later activity: under-privilege (denied test calls) vs over-privilege (unused grants).

    Mines on the training window, replays the test window right after it, for several settings.

    Example: miner backtest --role orders-api-task --train 60d --test 30d --format json
    Example: miner backtest --all --train 30d --test 15d --format csv > backtest.csv
    """
    from miner import backtest, iam, models, usage

    formats = ("table", "json", "csv") if every else ("table", "json")
    if fmt not in formats:
        fail(f"--format must be {', '.join(formats[:-1])} or {formats[-1]}{'' if every else ' (csv with --all)'} "
             f"(got {fmt!r})")
    if every and (role or user or principal or account):
        fail("--all backtests every principal: leave out --role, --user, --principal and --account")
    try:
        train_days, test_days = backtest.parse_days(train), backtest.parse_days(test)
        history = backtest.parse_days(min_days)
        mr = sorted({int(x) for x in levels.split(",") if x.strip()}, reverse=True)
    except ValueError as e:
        fail(str(e) if "duration" in str(e) else f"--max-resources takes integers such as 1,10,50 ({e})")
    settings = [s for s in backtest.default_settings() if s.service_level or s.max_resources in mr]
    settings += [backtest.Setting(f"{'wildcards' if wc else 'no-wildcards'}, max-resources {m}", wc, m)
                 for wc in (False, True) for m in mr if m not in (1, 10, 50)]
    con = _open_store(store)
    source = _rv_iam_source(iam_snapshot, profile, endpoint_url, live)
    if every:
        _backtest_all(con, source, train_days, test_days, window(None, until).until if until else None, history,
                      settings, fmt, quiet)
        return
    everything = models.Window(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(2200, 1, 1, tzinfo=timezone.utc))
    who = _principal(con, everything, role, user, principal, account)
    if until:
        anchor = window(None, until).until
    else:
        last = usage.principals(con, everything, principal_arn=who.arn)["last_seen"].max()
        anchor = backtest.default_anchor(last.to_pydatetime())
    try:
        train_w, test_w = backtest.split_windows(anchor, train_days, test_days)
    except ValueError as e:
        fail(str(e))
    current = None
    if source is not None:
        try:
            current = [d for _, d in source.attached(who.arn).documents]
        except iam.IamError as e:
            fail(str(e))
    try:
        result = backtest.run_backtest(con, who, train_w, test_w, settings=settings, current=current)
    except ValueError as e:
        fail(str(e))
    if fmt == "json":
        print_json(result)
    else:
        sys.stdout.write(backtest.format_table(result))


def _backtest_all(con, source, train_days: float, test_days: float, until: Optional[datetime], min_days: float,
                  settings: list, fmt: str, quiet: bool) -> None:
    """``miner backtest --all``: run :func:`miner.backtest.run_backtest_all` with a progress bar, print the result."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from miner import backtest, iam

    known = {inv["arn"] for inv in source.inventory} if source is not None else set()

    def current_for(arn: str):
        if arn not in known:
            return None
        try:
            return [d for _, d in source.attached(arn).documents]
        except iam.IamError:
            return None

    bar = Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TextColumn("principals"),
                   TimeElapsedColumn(), console=err, transient=True, disable=quiet)
    task = bar.add_task("backtest", total=None)
    started = time.perf_counter()
    with bar:
        try:
            result = backtest.run_backtest_all(
                con, train_days=train_days, test_days=test_days, until=until, min_days=min_days, settings=settings,
                current_for=current_for if source is not None else None,
                progress=lambda done, total, _arn: bar.update(task, total=total, completed=done))
        except ValueError as e:
            fail(str(e))
    if fmt == "json":
        sys.stdout.write(json_text(result, indent=2, allow_nan=False) + "\n")
    elif fmt == "csv":
        sys.stdout.write(backtest.all_csv(result))
    else:
        sys.stdout.write(backtest.format_all_table(result))
    if not quiet:
        say(err, f"backtested {len(result['principals'])} principals, skipped {len(result['skipped'])}, in "
                 f"{time.perf_counter() - started:.1f} s; recommended default: {result['recommended']}")


def main() -> None:
    """Console-script entry point."""
    from miner.store import StoreError

    try:
        app()
    except (UserError, StoreError) as e:
        err.print(_error_text(str(e)))
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
