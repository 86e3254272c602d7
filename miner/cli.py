"""The ``miner`` command line: parses options, calls the library, formats output."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.console import Console

from miner import models

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Mine least-privilege IAM policies from AWS CloudTrail logs.",
    pretty_exceptions_enable=False,
)

#: Results go to stdout; summaries, progress and errors go to stderr.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

StoreOpt = typer.Option(None, "--store", help="Parquet store directory [default: $MINER_STORE or ~/.local/share/miner/store].")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr (for scripts).")


class UserError(Exception):
    """A mistake the user can fix; printed as one clear message, never a traceback."""


def fail(message: str, code: int = 2) -> NoReturn:
    """Print an error message to stderr and exit."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
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
    """Write JSON to stdout (plain, no colour), for scripts."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


# ----------------------------------------------------------------------------- ingest
# (section owned by the ingest stage)

# ----------------------------------------------------------------------------- mapping: coverage, catalog
# (section owned by the mapping stage)

# ----------------------------------------------------------------------------- principals, usage, suggest
# (section owned by the suggest stage)

# ----------------------------------------------------------------------------- review, backtest
# (section owned by the review stage)


def main() -> None:
    """Console-script entry point."""
    from miner.store import StoreError

    try:
        app()
    except (UserError, StoreError) as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
