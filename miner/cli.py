"""The ``miner`` command line: parses options, calls one library function per command, formats its result."""

from __future__ import annotations

import functools
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, Optional

import typer
import typer.core

try:  # typer 0.29+ carries its own copy of click (and no longer depends on click)
    from typer import _click as click
except ImportError:  # older typer: click itself
    import click
from rich.console import Console
from rich.text import Text

from miner import __version__, models
from miner.escape import csv_text, json_safe, json_text, visible

#: Exit statuses: a pipeline can trust them (README "Exit codes").
EXIT_FINDING = 1  # only for a finding a flag asked to fail on (--fail-on-unused)
EXIT_USER = 2  # a mistake the user can fix, said in one line
EXIT_SOFTWARE = 70  # an unexpected error (a bug), as sysexits.h's EX_SOFTWARE; the traceback goes to a file
EXIT_INTERRUPTED = 130


class _Console(Console):
    """A rich console for which a closed stdout (``| head``) is the reader's choice, not an error (rich exits 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _quiet_broken_pipe()
        raise typer.Exit(0)


def _console(**kwargs) -> Console:
    """A rich console that never reads markup, emoji codes or highlights in what it prints."""
    return _Console(markup=False, emoji=False, highlight=False, **kwargs)


#: Results go to stdout; summaries, progress and errors go to stderr.
out = _console(soft_wrap=True)
err = _console(stderr=True, soft_wrap=True)


def plain(text: object, style: str = "") -> Text:
    """Text that may hold logged values, for rich: printed as is (no markup, no emoji), control characters visible."""
    return Text(visible(str(text)), style=style)


def say(console: Console, line: str) -> None:
    """Print one line that may hold logged values (see :func:`plain`)."""
    console.print(plain(line))


def _error_text(message: str) -> Text:
    """``error: message``; the message's own line breaks are kept, every other control character is made visible."""
    return Text.assemble(("error:", "bold red"), " ", "\n".join(visible(line) for line in str(message).split("\n")))


def fail(message: str, code: int = EXIT_USER) -> NoReturn:
    """Print an error message to stderr (plain text, control characters visible) and exit."""
    err.print(_error_text(message))
    raise typer.Exit(code)


# ----------------------------------------------------------------------------- errors, help, --version, --debug

#: Exceptions that carry their own exit status (click's and typer's): never reported as a bug.
_OWN_STATUS = (click.exceptions.ClickException, getattr(click.exceptions, "Exit", typer.Exit),
               getattr(click.exceptions, "Abort", typer.Abort), typer.Exit, typer.Abort)


def _user_errors() -> tuple[type[Exception], ...]:
    from miner.engine import EngineError
    from miner.jobs import JobError
    from miner.store import StoreError

    return JobError, StoreError, EngineError


def _save_traceback() -> Optional[Path]:
    """Write the current exception's traceback (with the version and command line) to a file in the temp dir."""
    import tempfile
    import traceback

    try:
        fd, name = tempfile.mkstemp(prefix="miner-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"miner {__version__}\ncommand: {sys.argv!r}\n\n{traceback.format_exc()}")
        return Path(name)
    except OSError:
        return None


def _report_bug(e: Exception, debug: bool) -> NoReturn:
    """One line for an unexpected error, where its traceback is, and exit :data:`EXIT_SOFTWARE`."""
    import traceback

    path = _save_traceback()
    if debug:
        for line in traceback.format_exc().rstrip("\n").split("\n"):
            err.print(plain(line))
    where = f"the traceback is in {path}" if path else "the traceback could not be saved"
    fail(f"unexpected error ({where}{'' if debug else '; `miner --debug ...` prints it'}): "
         f"{type(e).__name__}: {str(e)[:300]}", EXIT_SOFTWARE)


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (``| head``): stop writing there, and say nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _Argument(typer.core.TyperArgument):
    """An argument whose help shows its metavar only (``SOURCE...``, not ``{SOURCE...}...`` and ``<list[str]>``)."""

    def display_type_rich(self, ctx: click.Context) -> Optional[str]:
        return None

    def _usage_display_name(self) -> str:
        return self.display_name_raw


#: What :func:`_plain_value` returns for a value it leaves to typer.
_TYPER = object()
#: typer's defaults for a path parameter; with others (``exists=True``, ``resolve_path`` ...) typer converts it.
_PLAIN_PATH = {"exists": False, "file_okay": True, "dir_okay": True, "writable": False, "readable": True,
               "resolve_path": False, "allow_dash": False, "path_type": None}


def _plain_value(kind: type, value):
    """``value`` as typer would convert a command-line word to ``kind`` (``str``, ``int``, ``bool``, ``Path``), for the
    plain words this CLI takes; :data:`_TYPER` for anything else (typer decides, and words its own error)."""
    if kind is str and type(value) is str:
        return value
    if kind is int and (type(value) is int or type(value) is str and value.isascii() and value.isdigit()
                        and len(value) < 19):
        return int(value)
    if kind is bool and type(value) is bool:
        return value
    if kind is Path and type(value) is str and value:
        path = Path(value)
        try:
            os.stat(path)
        except OSError:
            return path  # need not exist
        except ValueError:
            return _TYPER  # NUL in the name
        return path if os.access(path, os.R_OK) else _TYPER
    return _TYPER


class _Coercion:
    """typer's coercion of one parameter (``str``, ``int``, ``bool``, ``Path``, or a list of one of them) without the
    pydantic validator typer 0.29 builds for each parameter first (with pydantic's import for the first one: about
    0.25 s of every command's start-up); any value :func:`_plain_value` does not take goes to typer's own coercion."""

    def __init__(self, kind: type, many: bool):
        self._kind, self._many, self._typer = kind, many, None

    def coerce(self, value, param, ctx):
        """The value typer would pass to the command (typer's ``RuntimeParam.coerce``)."""
        if value is None:
            return () if param.multiple or param.nargs == -1 else None
        if self._many and type(value) in (tuple, list):
            got = [_plain_value(self._kind, v) for v in value]
            if _TYPER not in got:
                return got
        elif not self._many:
            got = _plain_value(self._kind, value)
            if got is not _TYPER:
                return got
        if self._typer is None:
            from typer._coercion import build_runtime_param

            self._typer = build_runtime_param(param.type_descriptor)
        return self._typer.coerce(value, param=param, ctx=ctx)

    @staticmethod
    def install(param) -> None:
        """Use it for ``param`` when typer coerces through a pydantic validator (typer 0.29+) and the parameter is of a
        kind it knows, without a parser, choices or path checks; otherwise leave typer's."""
        desc = getattr(param, "type_descriptor", None)
        if desc is None or getattr(param, "_runtime_param", False) is not None:
            return
        info, kind = desc.parameter_info, desc.annotation
        many = desc.is_list
        if many:
            args = getattr(kind, "__args__", ())
            kind = args[0] if len(args) == 1 else None
        plain_path = all(getattr(info, k, v) == v for k, v in _PLAIN_PATH.items())
        if kind not in (str, int, bool, Path) or info.parser is not None or desc.is_choice or desc.is_file or \
                (kind is Path and not plain_path) or (kind is not Path and desc.is_path) or \
                (kind is int and (info.min is not None or info.max is not None)):
            return
        param._runtime_param = _Coercion(kind, many)


class _Coerced:
    """A command or group whose parameters (``-h/--help`` too) are coerced by :class:`_Coercion`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in self.params:
            _Coercion.install(p)

    def get_help_option(self, ctx: click.Context):
        option = super().get_help_option(ctx)
        if option is not None:
            _Coercion.install(option)
        return option


class _Command(_Coerced, typer.core.TyperCommand):
    """A command whose arguments print as :class:`_Argument` does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for p in self.params:
            if isinstance(p, typer.core.TyperArgument):
                p.__class__ = _Argument


class _Group(_Coerced, typer.core.TyperGroup):
    """The ``miner`` group: ``--debug`` anywhere on the line, and every error turned into its exit status.

    A user error is one line and exit 2; an unexpected one is one line, its traceback saved to a file (printed with
    ``--debug``) and exit 70; Ctrl-C is exit 130; a closed stdout (``| head``) ends quietly.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug"] + [a for a in args[:end] if a != "--debug"] + args[end:]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except _OWN_STATUS:
            raise
        except KeyboardInterrupt:
            fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            _quiet_broken_pipe()
            raise typer.Exit(0) from None
        except Exception as e:  # noqa: BLE001 - every error ends in one line and a documented status
            if isinstance(e, _user_errors()):
                fail(str(e))
            _report_bug(e, bool(ctx.params.get("debug")) or os.environ.get("MINER_DEBUG") == "1")


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    help="Mine least-privilege IAM policies from AWS CloudTrail logs.\n\n"
         "Example: miner ingest sample_logs --store ./miner-store\n\n"
         "Exit status: 0 success; 1 a finding a flag asked to fail on (--fail-on-unused); 2 a user error, in one "
         "line; 70 an unexpected error (one line naming the file that holds its traceback; --debug prints it).",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text is plain: [default: ...] and Operations[] print as written
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"miner {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print miner's version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an unexpected error (exit 70) as well "
                                                      "(anywhere on the line; or MINER_DEBUG=1)."),
) -> None:
    """Mine least-privilege IAM policies from AWS CloudTrail logs."""


def command(name: str, short_help: str):
    """Register a command with a one-line summary for ``miner --help`` (the docstring is its ``--help``)."""
    return app.command(name, cls=_Command, short_help=short_help)


# ----------------------------------------------------------------------------- shared options and helpers

StoreOpt = typer.Option(None, "--store", metavar="DIR|S3URL",
                        help="Parquet store: a directory or s3://bucket/prefix [default: $MINER_STORE or "
                             "~/.local/share/miner/store].")
StoreEndpointOpt = typer.Option(None, "--store-endpoint-url", metavar="URL",
                                help="S3 endpoint of an s3:// store, e.g. MinIO or a local moto server [default: "
                                     "$MINER_STORE_ENDPOINT_URL, else boto3's: $AWS_ENDPOINT_URL_S3, AWS].")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress, notes or summary on stderr (for scripts).")
SinceOpt = typer.Option(None, "--since", metavar="TIME",
                        help="Window start: a date, a timestamp or an age (90d, 12w, 6h) [default: 90 days before "
                             "--until]. Ages count from now rounded up to the hour.")
UntilOpt = typer.Option(None, "--until", metavar="TIME",
                        help="Window end (a bare date counts whole) [default: now, rounded up to the hour].")
RoleOpt = typer.Option(None, "--role", metavar="NAME", help="Role name (or role ARN).")
UserOpt = typer.Option(None, "--user", metavar="NAME", help="IAM user name (or user ARN).")
PrincipalOpt = typer.Option(None, "--principal", metavar="ARN", help="Principal ARN as stored (role, user, ...).")
AccountOpt = typer.Option(None, "--account", metavar="ID", help="Account id, when a name exists in several accounts.")
SnapshotOpt = typer.Option(None, "--iam-snapshot", metavar="PATH",
                           help="Grants from `aws iam get-account-authorization-details` output: a file, or a folder "
                                "with one file per account.")
LiveOpt = typer.Option(False, "--live", help="Grants read live from IAM (boto3's default credentials).")
ProfileOpt = typer.Option(None, "--profile", metavar="NAME", help="AWS profile for live IAM (implies --live).")
EngineOpt = typer.Option("duckdb", "--engine", metavar="duckdb|spark",
                         help="Query engine: duckdb (one process) or spark (Apache Spark, pip install 'miner[spark]'; "
                              "a cluster with --spark-master or $SPARK_REMOTE).")
SparkMasterOpt = typer.Option(None, "--spark-master", metavar="URL",
                              help="With --engine spark: the master URL, e.g. yarn or spark://host:7077 [default: "
                                   "$SPARK_REMOTE (Spark Connect) when set, else $SPARK_MASTER, else local[*]].")
EndpointOpt = typer.Option(None, "--endpoint-url", metavar="URL",
                           help="IAM endpoint for live reads, e.g. a local moto server (implies --live).")


def _format_opt(choices: str, default: Optional[str], text: str = "The output format."):
    return typer.Option(default, "--format", "-f", metavar=choices, help=text)


def store_path(store: Optional[str], endpoint_url: Optional[str] = None, profile: Optional[str] = None):
    """The store from ``--store`` or the default: a directory, or an S3 location carrying its endpoint and profile
    (a bad ``s3://`` URL fails with one line)."""
    from miner.store import StoreError, root

    try:
        return root(store if store is not None else models.default_store_path(), endpoint_url=endpoint_url,
                    profile=profile)
    except StoreError as e:
        fail(str(e))


def window(since: Optional[str], until: Optional[str], default_days: int = 90, *, quiet: bool = True) -> models.Window:
    """Parse ``--since``/``--until`` into a window (clock edges rounded up to the hour), or fail with the reason.

    Unless ``quiet``, says on stderr which time the clock-relative edges count from.
    """
    from miner.jobs import JobError, parse_window

    try:
        win, note = parse_window(since, until, default_days=default_days)
    except JobError as e:
        fail(str(e))
    if note and not quiet:
        say(err, f"note: {note}")
    return win


def _engine(engine: str, spark_master: Optional[str]) -> dict:
    """The ``engine`` and ``spark_master`` keyword arguments of a job, ``--engine`` checked."""
    from miner.engine import ENGINES

    return {"engine": _check_format(engine, ENGINES, "--engine"), "spark_master": spark_master}


def _notes(notes, quiet: bool) -> None:
    if not quiet:
        for n in notes:
            say(err, f"note: {n}")


def print_json(obj) -> None:
    """Write strict JSON to stdout (plain, no colour), for scripts: NaN and infinities as null."""
    sys.stdout.write(_json(obj))


def _json(obj) -> str:
    """Strict, indented JSON text: NaN and infinities as null, exact values otherwise."""
    return json_text(json_safe(obj), indent=2, default=str, allow_nan=False) + "\n"


def _check_format(fmt: str, allowed: tuple[str, ...], option: str = "--format") -> str:
    fmt = fmt.lower()
    if fmt not in allowed:
        fail(f"{option} must be one of {', '.join(allowed)} (got {fmt!r})")
    return fmt


# Output files: the format follows the extension, checked before any work.
POLICY_EXTENSIONS = {".json": "json", ".tf": "terraform", ".yaml": "cloudformation", ".yml": "cloudformation"}
REPORT_EXTENSIONS = {".txt": "text", ".json": "json"}
REVIEW_EXTENSIONS = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md", ".csv": "csv", ".json": "json"}


def output_format(path: Path, extensions: dict[str, str], option: str) -> str:
    """The format of an output file, from its extension; an unknown extension or an unusable folder fails now.

    A missing parent folder is created when the file is written (:func:`write_output`).
    """
    fmt = extensions.get(path.suffix.lower())
    if fmt is None:
        what = f"unknown extension {path.suffix!r}" if path.suffix else "no extension"
        fail(f"{option} {path}: {what}: the format follows the extension, one of {', '.join(extensions)}")
    if path.is_dir():
        fail(f"{option} {path} is a folder: name a file")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        fail(f"{option} {path}: cannot create a file under {parent}")
    return fmt


def write_output(path: Path, text: str, quiet: bool) -> None:
    """Write an output file, creating its parent folder; a failure is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        fail(f"cannot write {path}: {e.strerror or e}")
    if not quiet:
        say(err, f"wrote {path}")


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


@command("ingest", "Read CloudTrail (files, S3, LookupEvents) into the store.")
def ingest_cmd(
    sources: list[str] = typer.Argument(..., metavar="SOURCE...",
                                        help="Local files or folders, S3 URIs (s3://bucket or "
                                             "s3://bucket/prefix), and/or cloudtrail://REGION[,REGION...] (the "
                                             "last 90 days of management events through LookupEvents)."),
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    since: Optional[str] = typer.Option(
        None, "--since", metavar="TIME", help="Keep records from this time (date, timestamp or age like 30d) "
                                              "[default: everything for local files, the last 7 days for S3]."),
    until: Optional[str] = typer.Option(None, "--until", metavar="TIME",
                                        help="Keep records before this time (a bare date includes that day) "
                                             "[default: now]."),
    account: list[str] = typer.Option([], "--account", metavar="ID", help="Only this account id (repeatable)."),
    region: list[str] = typer.Option([], "--region", metavar="REGION", help="Only this region (repeatable)."),
    workers: int = typer.Option(16, "--workers", metavar="N", help="Parallel S3 downloads (at least 1)."),
    processes: Optional[int] = typer.Option(None, "--processes", metavar="N",
                                            help="Parser processes (at least 1) [default: the CPUs available]."),
    profile: Optional[str] = typer.Option(None, "--profile", metavar="NAME",
                                          help="AWS profile for S3 and cloudtrail:// sources (standard "
                                               "credential chain otherwise)."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", metavar="URL",
                                               help="S3 endpoint URL (S3-compatible storage, a local moto server)."),
    cloudtrail_endpoint_url: Optional[str] = typer.Option(
        None, "--cloudtrail-endpoint-url", metavar="URL",
        help="CloudTrail endpoint URL for cloudtrail:// sources [default: boto3's: $AWS_ENDPOINT_URL_CLOUDTRAIL, "
             "AWS]."),
    s3_region: Optional[str] = typer.Option(None, "--s3-region", metavar="REGION",
                                            help="Region of the S3 client [default: from the AWS config; S3 "
                                                 "redirects to the bucket's]."),
    max_object_size: str = typer.Option("256MiB", "--max-object-size", metavar="SIZE",
                                        help="Skip objects larger than this once decompressed (e.g. 64MiB, 1G); a "
                                             "gzip stops inflating there."),
    fmt: str = _format_opt("text|json", "text", "json: a machine-readable summary on stdout."),
    as_json: bool = typer.Option(False, "--json", help="The same as --format json."),
    engine: str = typer.Option("duckdb", "--engine", metavar="duckdb|spark",
                               help="Where parsing runs: duckdb (local parser processes) or spark (Spark executors; "
                                    "listing and the commit stay here; pip install 'miner[spark]')."),
    spark_master: Optional[str] = SparkMasterOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Ingest CloudTrail logs into the Parquet store: only new objects, deduplicated on eventID, crash-safe.

    Example: miner ingest sample_logs --store ./miner-store

    Example: miner ingest s3://acme-trail-logs --since 30d --region us-east-1 --profile audit

    Example: miner ingest cloudtrail://us-east-1,eu-west-1 --profile audit

    Reads S3 delivery trees (AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/, organization trails included), \
listing only the day folders in the window; and local .json/.json.gz files holding {"Records": ...}, JSON \
arrays, NDJSON or EventBridge envelopes. Files that cannot be used are skipped with their reason; a re-run \
reads only objects not yet in the store's manifest. Exit status 2 when a source is missing or unreachable, \
or when no file held CloudTrail records. cloudtrail://REGION reads the account's event history \
(LookupEvents: management events only, at most 90 days, 2 requests per second per region; \
$MINER_LOOKUP_RATE changes that rate) in UTC-day slices; a re-run reads only the slices not finished.
    """
    from miner import ingest as ing
    from miner.engine import EngineError
    from miner.store import StoreError

    as_json = as_json or _check_format(fmt, ("text", "json")) == "json"
    if workers < 1 or (processes is not None and processes < 1):
        fail("--workers and --processes take a number of at least 1")
    win = None
    if since or until:  # only --until: everything before it locally, the S3 default span before it for S3
        s3 = any(s.startswith("s3://") for s in sources)
        remote = s3 or any(ing.lookup.is_source(s) for s in sources)
        win = window(since, until, default_days=ing.S3_DEFAULT_DAYS if s3 else ing.lookup.MAX_DAYS) \
            if remote and not since else window(since or "1970-01-01", until)
    try:
        max_bytes = models.parse_size(max_object_size)
    except ValueError as e:
        fail(f"--max-object-size: {e}")
    target = store_path(store, store_endpoint, profile)
    progress_cb = None
    bar = None
    if not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        lookup_only = all(ing.lookup.is_source(s) for s in sources)
        columns = (TextColumn("[bold]LookupEvents[/]"), BarColumn(), TextColumn("{task.completed:.1f} of "
                   "{task.total:.1f} days"), TextColumn("{task.fields[requests]:>8,} requests")) if lookup_only \
            else (TextColumn("[bold]ingest[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("files"))
        bar = Progress(*columns, TextColumn("{task.fields[records]:>12,} records"), TimeElapsedColumn(),
                       console=err, transient=True)
        task = bar.add_task("ingest", total=1, records=0, requests=0)

        def progress_cb(p: "ing.Progress") -> None:
            if lookup_only:  # days of event history read (all regions), requests, events
                bar.update(task, total=max(p.days_total, 1e-9), completed=p.days_done, records=p.records,
                           requests=p.requests)
            else:
                bar.update(task, total=max(p.files_total, 1), completed=p.files_done, records=p.records)
            if not bar.live.is_started:  # started at the first report: parser processes fork before its thread
                bar.start()

    try:
        report = ing.ingest(sources, target, window=win, accounts=account, regions=region, workers=workers,
                            processes=processes, profile=profile, endpoint_url=endpoint_url, s3_region=s3_region,
                            progress=progress_cb, max_object_size=max_bytes, **_engine(engine, spark_master),
                            cloudtrail_endpoint_url=cloudtrail_endpoint_url)
    except (ing.IngestError, StoreError, EngineError) as e:
        if bar is not None:
            bar.stop()
        fail(str(e))
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        fail("interrupted: the store holds what was committed; run the same command again to finish",
             EXIT_INTERRUPTED)
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
    if report.files_seen or not report.lookup_slices:
        say(err, f"  files:    {report.files_seen:,} seen, {report.files_read:,} read, "
            f"{report.files_already_ingested:,} already ingested, {report.files_skipped:,} skipped"
            + (f", {report.files_filtered:,} outside the window/filters" if report.files_filtered else "")
            + (f" (trees not read: {pruned})" if pruned else ""))
    say(err, f"  records:  {report.records_read:,} read, {report.records_written:,} written, "
        f"{report.duplicates:,} duplicates, {report.records_skipped:,} skipped"
        + (f", {report.records_filtered:,} outside the window/filters" if report.records_filtered else ""))
    if report.s3_list_requests:
        say(err, f"  S3:       {report.s3_list_requests:,} list requests")
    if report.lookup_slices:
        say(err, f"  lookup:   {report.lookup_requests:,} LookupEvents requests ({report.lookup_retries:,} retried), "
            f"{report.lookup_slices:,} day slices: {report.lookup_slices_done_before:,} already ingested, "
            f"{report.lookup_slices_failed:,} not finished (retried by the next run)")
        for w in report.lookup_windows:
            say(err, f"            {w}: management events only (no data events)")
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


@command("coverage", "How well stored events map to IAM actions and resources.")
@retry_if_store_changes
def coverage_cmd(
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    engine: str = EngineOpt,
    spark_master: Optional[str] = SparkMasterOpt,
    since: Optional[str] = typer.Option(None, "--since", metavar="TIME",
                                        help="Window start (date, timestamp or age like 90d) [default: all]."),
    until: Optional[str] = typer.Option(None, "--until", metavar="TIME",
                                        help="Window end (a bare date includes that day) [default: now]."),
    unmapped: bool = typer.Option(False, "--unmapped", help="List only the events that map to no action (the gaps)."),
    fmt: str = _format_opt("table|json", "table"),
    service_reference: Optional[Path] = ServiceRefOpt,
    quiet: bool = QuietOpt,
) -> None:
    """How well the stored events map to IAM actions and resource ARNs, per event source and name.

    Example: miner coverage --store ./miner-store --unmapped

    Columns: events; status (mapped, no_permission, service_event, not_api_call, unmapped); the actions; how many
    events got their resource from the record's ARN, from a template filled from request parameters, or "*"
    (n/a: the action has no resource-level permissions).
    """
    from miner import jobs, mapping

    fmt = _check_format(fmt, ("table", "json"))
    mapper = _map_mapper(service_reference)
    win_since = win_until = None
    if since or until:
        w = window(since or "1970-01-01", until, default_days=90, quiet=quiet)
        win_since, win_until = w.since, w.until
    target = store_path(store, store_endpoint)
    cov = jobs.coverage(target, win_since, win_until, mapper=mapper, **_engine(engine, spark_master))
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
        _notes(jobs.evidence_notes(target, models.Window(win_since or jobs.EVERYTHING.since,
                                                         win_until or jobs.EVERYTHING.until)), quiet)


@command("catalog", "The IAM catalogue and mapping rules in use.")
def catalog_cmd(
    service_reference: Optional[Path] = ServiceRefOpt,
    fmt: str = _format_opt("table|json", "table"),
    quiet: bool = QuietOpt,
) -> None:
    """Show the IAM catalogue, mapping rules and (optional) service reference in use.

    Example: miner catalog --service-reference ./aws-service-reference --format json
    """
    fmt = _check_format(fmt, ("table", "json"))
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
        if not quiet:
            for p in ref.problems:
                say(err, f"  skipped {p}")
    say(out, f"precedence         {info['precedence']}")


# ----------------------------------------------------------------------------- principals, usage, suggest
# (section owned by the suggest stage; the work is in miner.jobs)


def _grants(iam_snapshot: Optional[Path], live: bool, profile: Optional[str], endpoint_url: Optional[str]):
    from miner.jobs import Grants

    return Grants(iam_snapshot, live, profile, endpoint_url)


def _records(df) -> list[dict]:
    """A DataFrame as JSON-ready records (timestamps as ISO text, numpy scalars as Python)."""
    return json.loads(df.to_json(orient="records", date_format="iso", date_unit="s"))


def _is_list(v) -> bool:
    return hasattr(v, "tolist") or isinstance(v, (list, tuple))


def _cell(v) -> str:
    """A table cell: lists joined, times to the minute, integers with separators, missing values blank."""
    import numbers

    if _is_list(v):
        return ", ".join(map(str, list(v)))
    if v is None or (not isinstance(v, str) and v != v):  # None, NaN, NaT
        return ""
    if hasattr(v, "strftime"):
        return v.strftime("%Y-%m-%d %H:%M")
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return f"{int(v):,}"
    return str(v)


def _emit_frame(df, fmt: str, title: str, columns: list[str]) -> None:
    """Print a frame as a rich table (cells fold, never cut), JSON records or CSV."""
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
            numeric = str(df[c].dtype).startswith(("int", "float"))
            table.add_column(c, justify="right" if numeric else "left", overflow="fold")
        for row in df.itertuples(index=False):
            table.add_row(*(plain(_cell(v)) for v in row))
        console.print(table)


@command("principals", "Who acted in a window: roles, users, services.")
@retry_if_store_changes
def principals_cmd(
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    fmt: str = _format_opt("table|json|csv", "table", "The output format (json and csv give the ARNs)."),
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    engine: str = EngineOpt,
    spark_master: Optional[str] = SparkMasterOpt,
    quiet: bool = QuietOpt,
) -> None:
    """List the principals that acted in the window: type, events, first/last seen, services used (IAM prefixes).

    Example: miner principals --since 2026-08-01 --until 2026-09-14 --format csv

    The table names each principal (role or user name; the ARN for others); json and csv give the ARN.
    """
    from miner import jobs

    fmt = _check_format(fmt, ("table", "json", "csv"))
    win = window(since, until, quiet=quiet)
    listing = jobs.principals(store_path(store, store_endpoint), win, **_engine(engine, spark_master))
    _notes(listing.notes, quiet)
    if fmt == "table":
        _emit_frame(listing.frame, fmt, f"principals, {win}", ["name", "principal_type", "principal_account", "events",
                                                                "denied", "first_seen", "last_seen", "services"])
    else:
        _emit_frame(listing.frame, fmt, "", ["principal_arn", "principal_type", "events", "denied", "first_seen",
                                             "last_seen", "services"])


@command("usage", "What one principal did: actions and resources.")
@retry_if_store_changes
def usage_cmd(
    role: Optional[str] = RoleOpt,
    user: Optional[str] = UserOpt,
    principal: Optional[str] = PrincipalOpt,
    account: Optional[str] = AccountOpt,
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    fmt: str = _format_opt("table|json|csv", "table", "The output format (json and csv: every action row)."),
    every: bool = typer.Option(False, "--all", help="Table: one row per action and resource, not per resource "
                                                    "template."),
    top: int = typer.Option(5, "--top", metavar="N", help="How many source IP / user agent pairs to show."),
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    engine: str = EngineOpt,
    spark_master: Optional[str] = SparkMasterOpt,
    quiet: bool = QuietOpt,
) -> None:
    """What one principal did in the window: actions and resources, counts, first/last seen, regions, and from where.

    Example: miner usage --role orders-api-task --since 90d

    The table sums the calls of each action by the resource template `miner suggest` would grant (hundreds of
    keys under one prefix are one row, with the number of resources); --all lists every resource.
    """
    from miner import jobs

    fmt = _check_format(fmt, ("table", "json", "csv"))
    win = window(since, until, quiet=quiet)
    act = jobs.usage(store_path(store, store_endpoint), win, role=role, user=user, principal=principal, account=account, top=top,
                     **_engine(engine, spark_master))
    used, who = act.usage, act.principal
    _notes(act.notes, quiet)
    cols = ["action", "resource", "calls", "first_seen", "last_seen", "regions", "outcomes"]
    if fmt == "json":
        print_json({"principal": who.arn, "window": {"since": win.since.isoformat(), "until": win.until.isoformat()},
                    "events": used.events, "authorised_events": used.authorised_events,
                    "denied_events": used.denied_events, "actions": _records(used.authorised[cols + ["operations"]]),
                    "denied": _records(used.denied[cols]), "sources": _records(act.sources),
                    "unmapped": _records(used.unmapped), "no_permission": _records(used.no_permission),
                    "summary": _records(act.summary())})
        return
    if fmt == "csv":
        _emit_frame(used.actions, "csv", "", ["outcome_class"] + cols + ["operations"])
        return
    if not quiet:
        say(err, f"{who.arn} ({who.type}) · {win} · {used.events:,} events, {used.denied_events:,} denied")

    def table(frame, title: str) -> None:
        if every:
            _emit_frame(frame, "table", title, cols)
            return
        summary = act.summary(frame)
        more = f" ({len(frame):,} resources in {len(summary):,} rows; --all lists each)" \
            if len(summary) < len(frame) else ""
        _emit_frame(summary, "table", f"{title}, by action and resource template{more}", jobs.SUMMARY_COLUMNS)

    table(used.authorised, "authorised calls")
    if len(used.denied):
        table(used.denied, "denied calls (not granted)")
    if len(used.unmapped):
        _emit_frame(used.unmapped, "table", "calls that map to no IAM action", ["event_source", "event_name", "calls",
                                                                                "note"])
    _emit_frame(act.sources, "table", "from where (top source IP / user agent)",
                ["source_ip", "user_agent", "events", "first_seen", "last_seen"])


def _policy_files(result, fmt: str, path: Path, quiet: bool) -> None:
    """Write the policy to ``--out``; a split JSON policy goes to numbered sibling files (one document each)."""
    docs = result.suggestion.policies
    if fmt == "json" and len(docs) > 1:
        for i, doc in enumerate(docs, 1):
            write_output(path.with_name(f"{path.stem}-{i}{path.suffix}"), json_text(doc, indent=2) + "\n", quiet)
        return
    write_output(path, result.policy(fmt), quiet)


@command("suggest", "A least-privilege policy for one role or user (--diff).")
@retry_if_store_changes
def suggest_cmd(
    role: Optional[str] = RoleOpt,
    user: Optional[str] = UserOpt,
    principal: Optional[str] = PrincipalOpt,
    account: Optional[str] = AccountOpt,
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", metavar="FORMAT",
        help="The format of what stdout carries: the policy (json, terraform, cloudformation) or, with --diff, the "
             "report (text, json) [default: json; with --diff, text]. Files take theirs from their extension."),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE",
                                            help="Write the policy here (.json, .tf, .yaml/.yml) instead of stdout."),
    report_file: Optional[Path] = typer.Option(None, "--report", metavar="FILE",
                                               help="Write the diff report here (.txt, .json); implies --diff, and "
                                                    "stdout then carries the policy (unless --out)."),
    max_resources: int = typer.Option(10, "--max-resources", metavar="N",
                                      help="Generalise more than N resources of one kind to a common prefix "
                                           "(0: never)."),
    no_wildcards: bool = typer.Option(False, "--no-wildcards", help="List every action; no action wildcards."),
    do_diff: bool = typer.Option(False, "--diff", help="Compare with the policies attached now (--iam-snapshot or "
                                                       "--live); stdout carries the report."),
    iam_snapshot: Optional[Path] = SnapshotOpt,
    live: bool = LiveOpt,
    profile: Optional[str] = ProfileOpt,
    endpoint_url: Optional[str] = EndpointOpt,
    fail_on_unused: bool = typer.Option(False, "--fail-on-unused",
                                        help="With --diff: exit 1 when unused grants exist (for CI)."),
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    engine: str = EngineOpt,
    spark_master: Optional[str] = SparkMasterOpt,
    quiet: bool = QuietOpt,
) -> None:
    """A least-privilege policy from the principal's AUTHORISED calls in the window (default: the last 90 days).

    Example: miner suggest --role ci-deploy --since 90d --diff --iam-snapshot iam/ --out policy.tf

    Stdout carries one document: the policy, or with --diff the report (then the policy goes to --out, or the
    report to --report FILE and the policy to stdout). What it was mined from goes to stderr (-q: nothing).
    """
    from miner import jobs

    policy_fmt = output_format(out_file, POLICY_EXTENSIONS, "--out") if out_file else None
    report_fmt = output_format(report_file, REPORT_EXTENSIONS, "--report") if report_file else None
    do_diff = do_diff or report_file is not None
    grants = _grants(iam_snapshot, live, profile, endpoint_url)
    if grants.given and not do_diff:
        fail("--iam-snapshot, --live, --profile and --endpoint-url read the attached policies for the diff: add --diff")
    if do_diff and not grants.given:
        fail("--diff compares with the policies attached now: give --iam-snapshot FILE|DIR, or --live (with "
             "--profile NAME or --endpoint-url URL if needed)")
    if fail_on_unused and not do_diff:
        fail("--fail-on-unused needs --diff")
    stdout = "report" if do_diff and not report_file else None if out_file else "policy"
    if stdout == "report":
        report_fmt = (fmt or "text").lower()
        if report_fmt not in ("text", "json"):
            fail(f"--format {fmt}: with --diff, stdout carries the report (text or json); write the policy with "
                 f"--out FILE ({', '.join(POLICY_EXTENSIONS)})")
    elif stdout == "policy":
        policy_fmt = _check_format(fmt or "json", ("json", "terraform", "cloudformation"))
    elif fmt and fmt.lower() not in (policy_fmt, report_fmt):
        fail(f"--format {fmt} does not match the files' extensions, and stdout carries nothing: leave out --format")
    win = window(since, until, quiet=quiet)
    result = jobs.suggest(store_path(store, store_endpoint), win, role=role, user=user, principal=principal,
                          account=account,
                          max_resources=max_resources, wildcards=not no_wildcards,
                          grants=grants if do_diff else None, **_engine(engine, spark_master))
    if not quiet:
        for line in result.summary:
            say(err, line)
        _notes(result.notes, quiet)
        if do_diff and not out_file and stdout == "report":
            say(err, "policy:     in the report's unified diff; --out FILE writes it (.json, .tf, .yaml)")
    if out_file:
        _policy_files(result, policy_fmt, out_file, quiet)
    if report_file:
        write_output(report_file, _json(result.report_dict()) if report_fmt == "json" else result.report_text(),
                     quiet)
    if stdout == "policy":
        sys.stdout.write(result.policy(policy_fmt))
    elif stdout == "report":
        sys.stdout.write(_json(result.report_dict()) if report_fmt == "json" else result.report_text())
    if fail_on_unused and result.unused:
        if not quiet:
            say(err, f"{result.unused} unused grants (--fail-on-unused)")
        raise typer.Exit(EXIT_FINDING)


# ----------------------------------------------------------------------------- review, backtest
# (section owned by the review stage; the work is in miner.jobs)


def _default_review_path(win: models.Window) -> Path:
    """``review-<first day>-<last day>.html`` in the current folder (an ``until`` at midnight is not a day of it)."""
    last = win.until - timedelta(microseconds=1)
    return Path(f"review-{win.since:%Y-%m-%d}-{last:%Y-%m-%d}.html")


@command("review", "Every role and user ranked by unused privilege (HTML).")
@retry_if_store_changes
def review_cmd(
    since: Optional[str] = SinceOpt,
    until: Optional[str] = UntilOpt,
    out_files: list[Path] = typer.Option(
        [], "--out", "-o", metavar="FILE",
        help="Write the review here; the format follows the extension (.html, .md, .csv, .json). Repeat for several "
             "formats of one review [default: review-SINCE-UNTIL.html, or stdout for --format md, csv or json]."),
    fmt: Optional[str] = _format_opt("html|md|csv|json", None, "Without --out: md, csv and json go to stdout, "
                                                               "html to the default file."),
    compare: Optional[Path] = typer.Option(None, "--compare", metavar="FILE",
                                           help="A previous --format json review: show what changed since."),
    iam_snapshot: Optional[Path] = SnapshotOpt,
    live: bool = LiveOpt,
    profile: Optional[str] = ProfileOpt,
    endpoint_url: Optional[str] = EndpointOpt,
    account: Optional[str] = typer.Option(None, "--account", metavar="ID", help="Only principals of this account."),
    max_resources: int = typer.Option(10, "--max-resources", metavar="N",
                                      help="Suggested policies: generalise more than N resources of one kind."),
    no_wildcards: bool = typer.Option(False, "--no-wildcards", help="Suggested policies: no action wildcards."),
    processes: Optional[int] = typer.Option(None, "--processes", metavar="N",
                                            help="Processes that judge the principals' grants (at least 1; 1: "
                                                 "none forked) [default: the CPUs available]."),
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    engine: str = EngineOpt,
    spark_master: Optional[str] = SparkMasterOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Quarterly right-sizing review: every role and user ranked by unused privilege and its risk.

    Example: miner review --since 90d --iam-snapshot iam/ -o review.html -o review.json --compare last-quarter.json
    """
    from miner import jobs, report

    outputs = [(p, output_format(p, REVIEW_EXTENSIONS, "--out")) for p in out_files]
    if fmt:
        try:
            fmt = report.format_for(None, fmt)
        except ValueError as e:
            fail(f"--format: {e}")
        if outputs and any(f != fmt for _, f in outputs):
            fail(f"--format {fmt} does not match the extension of --out: leave out --format (the extension decides)")
    if compare is not None and not compare.is_file():
        fail(f"--compare {compare}: no such file (a previous `miner review --format json` output)")
    if processes is not None and processes < 1:
        fail("--processes takes a number of at least 1")
    grants = _grants(iam_snapshot, live, profile, endpoint_url)
    win = window(since, until, quiet=quiet)
    if not outputs and (fmt or "html") == "html":
        outputs = [(_default_review_path(win), "html")]
    result = jobs.review(store_path(store, store_endpoint), win, grants=grants, account=account, max_resources=max_resources,
                         wildcards=not no_wildcards, previous=compare, processes=processes,
                         **_engine(engine, spark_master))
    rendered: dict[str, str] = {}
    for path, f in outputs:
        if f not in rendered:
            rendered[f] = result.render(f)
        write_output(path, rendered[f], quiet=True)
    if not outputs:
        sys.stdout.write(result.render(fmt))
    if not quiet:
        _notes(result.notes, quiet)
        files = ", ".join(str(p) for p, _ in outputs)
        say(err, result.summary_line() + (f" -> {files}" if files else ""))


@command("backtest", "Score suggested policies on later activity.")
@retry_if_store_changes
def backtest_cmd(
    role: Optional[str] = RoleOpt,
    user: Optional[str] = UserOpt,
    principal: Optional[str] = PrincipalOpt,
    account: Optional[str] = AccountOpt,
    train: str = typer.Option("60d", "--train", metavar="DAYS", help="Training window length (mine here)."),
    test: str = typer.Option("30d", "--test", metavar="DAYS", help="Test window length (replay here), right after "
                                                                    "training."),
    until: Optional[str] = typer.Option(None, "--until", metavar="TIME",
                                        help="End of the test window [default: the midnight after the principal's "
                                             "last event]."),
    levels: str = typer.Option("1,10,50", "--max-resources", metavar="N,N,...",
                               help="Comma-separated --max-resources levels to compare."),
    fmt: str = _format_opt("table|json|csv", "table", "The output format; csv with --all (one row per principal "
                                                       "and setting)."),
    every: bool = typer.Option(False, "--all", help="Every IAM role and user with enough history, and each setting "
                                                    "summarised over them."),
    min_days: str = typer.Option("30d", "--min-days", metavar="DAYS",
                                 help="With --all: the history a principal needs before the end of its test window."),
    iam_snapshot: Optional[Path] = SnapshotOpt,
    live: bool = LiveOpt,
    profile: Optional[str] = ProfileOpt,
    endpoint_url: Optional[str] = EndpointOpt,
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    engine: str = EngineOpt,
    spark_master: Optional[str] = SparkMasterOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Score suggested policies on later activity: under-privilege (denied test calls) vs over-privilege (unused grants).

    Mines on the training window, replays the test window right after it, for several settings.

    Example: miner backtest --role orders-api-task --train 60d --test 30d --format json

    Example: miner backtest --all --train 30d --test 15d --format csv > backtest.csv
    """
    import time

    from miner import backtest, jobs

    formats = ("table", "json", "csv") if every else ("table", "json")
    fmt = fmt.lower()
    if fmt not in formats:
        fail(f"--format must be {', '.join(formats[:-1])} or {formats[-1]}{'' if every else ' (csv with --all)'} "
             f"(got {fmt!r})")
    anchor = window(None, until, quiet=quiet).until if until else None
    grants = _grants(iam_snapshot, live, profile, endpoint_url)
    args = dict(role=role, user=user, principal=principal, account=account, train=train, test=test, until=anchor,
                max_resources=levels, min_days=min_days, grants=grants, **_engine(engine, spark_master))
    if not every:
        result = jobs.backtest(store_path(store, store_endpoint), **args)
        if fmt == "json":
            print_json(result)
        else:
            sys.stdout.write(backtest.format_table(result))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TextColumn("principals"),
                   TimeElapsedColumn(), console=err, transient=True, disable=quiet)
    task = bar.add_task("backtest", total=None)
    started = time.perf_counter()
    with bar:
        result = jobs.backtest(store_path(store, store_endpoint), every=True, **args,
                               progress=lambda done, total, _arn: bar.update(task, total=total, completed=done))
    if fmt == "json":
        print_json(result)
    elif fmt == "csv":
        sys.stdout.write(backtest.all_csv(result))
    else:
        sys.stdout.write(backtest.format_all_table(result))
    if not quiet:
        say(err, f"backtested {len(result['principals'])} principals, skipped {len(result['skipped'])}, in "
                 f"{time.perf_counter() - started:.1f} s; recommended default: {result['recommended']}")


@command("advisor", "IAM Access Advisor's last-accessed reports into the store.")
def advisor_cmd(
    snapshot: Optional[Path] = typer.Option(
        None, "--snapshot", metavar="PATH",
        help="Read reports from files instead of IAM: `aws iam get-service-last-accessed-details` output with the "
             "\"Arn\" it was generated for (a file, or a folder of *.json)."),
    profile: Optional[str] = typer.Option(None, "--profile", metavar="NAME", help="AWS profile for live reads."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", metavar="URL",
                                               help="IAM endpoint (and Organizations/STS with --all-accounts), e.g. a "
                                                    "local test server."),
    all_accounts: bool = typer.Option(False, "--all-accounts",
                                      help="Every account of the organisation: Organizations ListAccounts, then "
                                           "sts:AssumeRole of --assume-role in each member account."),
    assume_role: str = typer.Option("OrganizationAccountAccessRole", "--assume-role", metavar="NAME",
                                    help="With --all-accounts: the role to assume in each member account."),
    fmt: str = _format_opt("text|json", "text", "json: a machine-readable summary on stdout."),
    store: Optional[str] = StoreOpt,
    store_endpoint: Optional[str] = StoreEndpointOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Read IAM Access Advisor's service- and action-level last access of every role and user into the store, so
    that suggest --diff and review can prove a grant unused for up to 400 days.

    Example: miner advisor --snapshot sample_logs/advisor --store ./miner-store

    Example: miner advisor --profile audit --store ./miner-store

    Without --snapshot the reports are generated live (GenerateServiceLastAccessedDetails, ACTION_LEVEL) with the
    standard credential chain or --profile. Live reads need iam:ListRoles, iam:ListUsers, iam:GenerateServiceLastAccessedDetails and
    iam:GetServiceLastAccessedDetails; --all-accounts also organizations:ListAccounts and sts:AssumeRole.
    """
    from miner import jobs

    fmt = _check_format(fmt, ("text", "json"))
    if all_accounts and snapshot is not None:
        fail("--snapshot reads reports from files: leave out --all-accounts")
    target = store_path(store, store_endpoint)
    bar = task = None
    if not quiet and snapshot is None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]advisor[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("principals"),
                       TimeElapsedColumn(), console=err, transient=True)
        task = bar.add_task("advisor", total=None)
        bar.start()
    try:
        run = jobs.advisor(target, snapshot=snapshot, profile=profile, endpoint_url=endpoint_url,
                           all_accounts=all_accounts, assume_role=assume_role,
                           progress=(lambda done, total, _arn: bar.update(task, total=total, completed=done))
                           if bar is not None else None)
    finally:
        if bar is not None:
            bar.stop()
    if fmt == "json":
        print_json(run.to_dict())
    if not quiet:
        for p in run.problems:
            say(err, f"note: {p}")
        say(err, f"read {run.principals:,} principals' Access Advisor reports from {run.source}: {run.services:,} "
                 f"services, {run.never_accessed:,} never accessed in the tracking period; {run.rows:,} rows -> "
                 f"{run.path}")


@command("organizations", "The organization's SCPs and RCPs into a snapshot file.")
def organizations_cmd(
    out: Optional[Path] = typer.Option(None, "-o", "--out", metavar="FILE",
                                       help="Write the snapshot here (e.g. iam/organizations.json) [default: stdout]."),
    account: list[str] = typer.Option([], "--account", metavar="ID",
                                      help="Only this account (repeatable) [default: every account of the "
                                           "organization]."),
    profile: Optional[str] = typer.Option(None, "--profile", metavar="NAME",
                                          help="AWS profile: the management account's or a delegated "
                                               "administrator's."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", metavar="URL",
                                               help="Organizations endpoint, e.g. a local test server."),
    quiet: bool = QuietOpt,
) -> None:
    """Read the organization's SCPs and RCPs (each account's OUs up to the root, and the policies attached on the way)
    into the snapshot that --iam-snapshot reads beside the IAM files, so that suggest --diff and review judge grants
    against them offline.

    Example: miner organizations --profile management -o iam/organizations.json

    Needs organizations:DescribeOrganization, ListAccounts, ListParents, DescribeOrganizationalUnit,
    ListPoliciesForTarget and DescribePolicy (the management account, or a delegated administrator).
    """
    from miner import jobs

    if out is not None:
        output_format(out, {".json": "json"}, "--out")
    bar = task = None
    if not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(TextColumn("[bold]organizations[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("accounts"),
                       TimeElapsedColumn(), console=err, transient=True)
        task = bar.add_task("organizations", total=None)
        bar.start()
    try:
        snap, notes = jobs.organizations_snapshot(
            profile=profile, endpoint_url=endpoint_url, accounts=account,
            progress=(lambda done, total: bar.update(task, total=total, completed=done)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.stop()
    text = _json(snap)
    if out is None:
        sys.stdout.write(text)
    else:
        write_output(out, text, quiet=True)
    if not quiet:
        for n in notes:
            say(err, f"note: {n}")
        counts = {k: len(snap[k]) for k in ("Accounts", "OrganizationalUnits", "Policies")}
        say(err, f"read {counts['Accounts']:,} accounts, {counts['OrganizationalUnits']:,} OUs and "
                 f"{counts['Policies']:,} SCPs/RCPs" + (f" -> {out}" if out is not None else ""))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
