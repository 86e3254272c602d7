"""miner: mine least-privilege IAM policies from AWS CloudTrail logs.

Each job of the command line is one call in :mod:`miner.jobs` (``miner.suggest`` is :func:`miner.jobs.suggest`);
``miner.review`` and ``miner.backtest`` name the stage modules, so their jobs are ``miner.jobs.review`` and
``miner.jobs.backtest``. Nothing is imported until it is used.
"""

__version__ = "0.1.0"

_LAZY = {"suggest": ("miner.jobs", "suggest"), "jobs": ("miner.jobs", None)}


def __getattr__(name: str):
    """``miner.suggest`` and ``miner.jobs``, imported on first use (``import miner`` stays instant)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'miner' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod
