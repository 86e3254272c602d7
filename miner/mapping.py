"""Maps CloudTrail events to the IAM actions and resource ARNs that authorised them.

PLACEHOLDER first version (naive prefix:eventName); the mapping stage replaces the internals but keeps
the public API: ``MappedAction``, ``MappingResult``, ``map_event`` and ``get_mapper().map(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from miner.catalog import get_catalog


@dataclass(frozen=True)
class MappedAction:
    """One IAM action an event needed, on one resource."""

    action: str  # canonical catalogue spelling, e.g. "s3:GetObject"
    resource: str  # an ARN, or "*"
    derivation: str  # "record_arn" | "template" | "star"
    reason: str | None = None  # why the resource is "*" (or other notes)
    implicit: bool = False  # True for extra actions such as iam:PassRole


@dataclass(frozen=True)
class MappingResult:
    """What one event maps to."""

    status: str  # "mapped" | "no_permission" | "unmapped"
    actions: tuple[MappedAction, ...] = ()
    note: str | None = None


def map_event(event_source: str, event_name: str, request_parameters=None, resources=None,
              account: str = "", region: str = "", partition: str = "aws") -> MappingResult:
    """Map one event (see module docstring); naive placeholder."""
    prefix = (event_source or "").split(".")[0]
    action = get_catalog().canonical(f"{prefix}:{event_name}")
    if action is None:
        return MappingResult("unmapped", (), f"no catalogue action for {prefix}:{event_name}")
    return MappingResult("mapped", (MappedAction(action, "*", "star", "placeholder mapper"),))


@lru_cache(maxsize=1)
def get_mapper():
    """The process-wide mapper (placeholder: the module itself)."""
    import sys

    return sys.modules[__name__]


def map(*args, **kwargs) -> MappingResult:  # noqa: A001 - placeholder API
    """Alias of :func:`map_event`."""
    return map_event(*args, **kwargs)
