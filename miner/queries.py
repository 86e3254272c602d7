"""Loads and runs the SQL files in ``queries/`` (from a wheel or an editable install)."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

_PARAM = re.compile(r"(?<![:$\w])\$([A-Za-z_][A-Za-z0-9_]*)")


def queries_dir() -> Path:
    """The directory holding the ``*.sql`` files.

    In a wheel they are packaged as ``miner/_queries``; in an editable install or a source checkout they are
    the top-level ``queries/`` folder beside the package.

    Returns:
        The directory path.

    Raises:
        FileNotFoundError: when neither location exists (a broken install).
    """
    packaged = resources.files("miner") / "_queries"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / "queries"
    if source.is_dir():
        return source
    raise FileNotFoundError("miner's SQL files are missing: reinstall miner (pip install --force-reinstall miner)")


def available() -> list[str]:
    """Names of all queries (file stems), sorted."""
    return sorted(p.stem for p in queries_dir().glob("*.sql"))


@lru_cache(maxsize=None)
def load(name: str) -> str:
    """The SQL text of one query.

    Args:
        name: the file stem, e.g. ``usage_by_principal``.

    Returns:
        The SQL text, header comment included.
    """
    path = queries_dir() / f"{name}.sql"
    if not path.exists():
        raise KeyError(f"no query named {name!r}; available: {', '.join(available())}")
    return path.read_text(encoding="utf-8")


def header(name: str) -> str:
    """The documentation header (leading ``--`` comment lines) of a query."""
    lines = []
    for line in load(name).splitlines():
        if not line.startswith("--"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines).strip()


def parameters(name: str) -> list[str]:
    """The named parameters (``$name``) a query uses, in first-use order."""
    body = "\n".join(l for l in load(name).splitlines() if not l.lstrip().startswith("--"))
    seen: dict[str, None] = {}
    for m in _PARAM.finditer(body):
        seen.setdefault(m.group(1), None)
    return list(seen)


def _values(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The values of the query's named parameters from ``params`` (extra ones ignored); raises when one is missing."""
    wanted = parameters(name)
    missing = [p for p in wanted if p not in params]
    if missing:
        raise TypeError(f"query {name!r} needs parameters: {', '.join(missing)}")
    return {k: params[k] for k in wanted}


def run(con: Any, name: str, **params: Any):
    """Run a query on a DuckDB connection (or another engine's, :mod:`miner.engine`) and return a pandas DataFrame.

    Args:
        con: a DuckDB connection on which the store's ``events`` view exists, or a
            :class:`miner.engine.SparkConnection`.
        name: the query's file stem.
        **params: values for the query's named parameters; extra ones are ignored, missing ones raise.

    Returns:
        The result as a :class:`pandas.DataFrame`.
    """
    values = _values(name, params)
    if hasattr(con, "run_sql"):  # another engine (miner.engine.SparkConnection): it translates the same file
        return con.run_sql(name, load(name), values)
    return con.execute(load(name), values).df()


def run_arrow(con: Any, name: str, **params: Any):
    """:func:`run`, returning a :class:`pyarrow.Table`: large results reach pandas without a conversion per value
    (``Table.to_pandas()`` keeps text columns in Arrow), several times faster than :func:`run` for wide text.

    Args:
        con: a DuckDB connection on which the store's ``events`` view exists, or a
            :class:`miner.engine.SparkConnection`.
        name: the query's file stem.
        **params: values for the query's named parameters; extra ones are ignored, missing ones raise.

    Returns:
        The result as a :class:`pyarrow.Table`.
    """
    values = _values(name, params)
    if hasattr(con, "run_sql_arrow"):  # another engine (miner.engine.SparkConnection)
        return con.run_sql_arrow(name, load(name), values)
    return con.sql(load(name), params=values).to_arrow_table()
