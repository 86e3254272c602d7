"""API operation references: botocore's service models (offline) and AWS Service Reference files (optional)."""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

#: Environment variable naming a directory of AWS Service Reference files (takes precedence over built-in rules).
ENV_SERVICE_REFERENCE = "MINER_SERVICE_REFERENCE"

_HOST_SUFFIXES = (".amazonaws.com.cn", ".amazonaws.com", ".api.aws", ".aws.internal")


def host_key(event_source: str | None) -> str:
    """The service part of a CloudTrail ``eventSource`` host: ``monitoring.amazonaws.com`` -> ``monitoring``.

    Args:
        event_source: the host as logged (case and a trailing dot tolerated).

    Returns:
        The lower-case key (empty for an empty source).
    """
    host = (event_source or "").strip().lower().rstrip(".")
    for suffix in _HOST_SUFFIXES:
        if host.endswith(suffix):
            return host[: -len(suffix)]
    return host


@dataclass(frozen=True)
class OperationModel:
    """The parts of a botocore operation the mapper uses."""

    name: str
    http_method: str = ""
    request_uri: str = ""
    uri_members: tuple[tuple[str, str], ...] = ()  # (URI placeholder, input member name)
    input_members: frozenset[str] = frozenset()  # every member of the input shape (TagSpecifications, ...)


@dataclass
class ServiceModel:
    """Metadata and operations of one botocore service model."""

    name: str  # botocore service name, e.g. "lex-models"
    endpoint_prefix: str
    signing_name: str
    service_id: str
    operations: dict[str, OperationModel] = field(default_factory=dict)

    @property
    def host_keys(self) -> tuple[str, ...]:
        """Event-source keys this model may be logged under (endpoint prefix, signing name, service name)."""
        keys = [self.endpoint_prefix, self.signing_name, self.name]
        return tuple(dict.fromkeys(k.lower() for k in keys if k))

    def prefix_candidates(self) -> tuple[str, ...]:
        """Spellings that may be the IAM prefix: signing name, endpoint prefix, service name, squashed serviceId."""
        sid = re.sub(r"[^a-z0-9-]", "", self.service_id.lower().replace(" ", ""))
        sid2 = sid.replace("-", "")
        names = [self.signing_name, self.endpoint_prefix, self.endpoint_prefix.split(".")[-1],
                 self.endpoint_prefix.split(".")[0], self.name, sid, sid2]
        return tuple(dict.fromkeys(n.lower() for n in names if n))


def _parse_model(name: str, doc: dict) -> ServiceModel:
    meta = doc.get("metadata", {})
    shapes = doc.get("shapes", {})
    ops = {}
    for op_name, op in doc.get("operations", {}).items():
        http = op.get("http", {})
        members: list[tuple[str, str]] = []
        shape = shapes.get(op.get("input", {}).get("shape", ""), {})
        if http.get("requestUri") and "{" in http.get("requestUri", ""):
            for member, spec in shape.get("members", {}).items():
                if spec.get("location") == "uri":
                    members.append((spec.get("locationName", member), member))
        ops[op_name] = OperationModel(op_name, http.get("method", ""), http.get("requestUri", ""), tuple(members),
                                      frozenset(shape.get("members", {})))
    return ServiceModel(name, meta.get("endpointPrefix", "") or "", meta.get("signingName", "") or "",
                        meta.get("serviceId", "") or "", ops)


class _ModelFiles:
    """Where botocore keeps its service models, found as ``botocore.loaders.Loader`` finds them (``AWS_DATA_PATH``,
    then ``~/.aws/models``, then botocore's own ``data`` folder) without importing the loader, which pulls in
    botocore's HTTP stack (urllib3 and more): the models are JSON files, read here directly."""

    def __init__(self):
        import importlib.util

        spec = importlib.util.find_spec("botocore")
        builtin = [os.path.join(p, "data") for p in (spec.submodule_search_locations or [])] if spec else []
        extra = os.environ.get("AWS_DATA_PATH")
        paths = [os.path.expanduser(os.path.expandvars(p)) for p in extra.split(os.pathsep)] if extra else []
        self.search_paths = paths + [os.path.expanduser(os.path.join("~", ".aws", "models")), *builtin]
        self._versions: dict[str, list[str]] = {}

    @staticmethod
    def _exists(path: str) -> bool:
        return os.path.isfile(path + ".json") or os.path.isfile(path + ".json.gz")

    def list_available_services(self, type_name: str) -> list[str]:
        """Every service with a ``type_name`` file (``service-2``) in some API version, sorted."""
        services = set()
        for base in self.search_paths:
            if not os.path.isdir(base):
                continue
            for name in os.listdir(base):
                folder = os.path.join(base, name)
                if os.path.isdir(folder) and any(self._exists(os.path.join(folder, v, type_name))
                                                 for v in os.listdir(folder)):
                    services.add(name)
        return sorted(services)

    def determine_latest_version(self, name: str, type_name: str) -> str:
        """The latest API version of a service that has a ``type_name`` file."""
        found = {v for base in self.search_paths if os.path.isdir(os.path.join(base, name))
                 for v in os.listdir(os.path.join(base, name)) if self._exists(os.path.join(base, name, v, type_name))}
        if not found:
            raise LookupError(f"no {type_name} model for {name}")
        return max(found)

    def load_service_model(self, name: str, type_name: str, version: str):  # pragma: no cover - unusual layouts
        import botocore.loaders

        return botocore.loaders.create_loader(os.environ.get("AWS_DATA_PATH")).load_service_model(name, type_name,
                                                                                                   version)


#: What a botocore service folder is named (``s3``, ``sso-oidc``, ``lex-models``): nothing else is looked up on disk.
_SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*")


class BotocoreModels:
    """Lazy, read-only index of botocore's service models (loaded once per process, about 0.5 s for all)."""

    def __init__(self):
        self._models: dict[str, ServiceModel | None] = {}
        self._by_host: dict[str, list[str]] | None = None
        self._loader = None
        self._names: list[str] | None = None
        self._has: dict[str, bool] = {}  # botocore name -> has a service-2 model (asked one by one)

    @property
    def version(self) -> str:
        """The botocore version whose models are used."""
        import botocore

        return botocore.__version__

    def _get_loader(self):
        if self._loader is None:
            # the files a botocore session's loader would read (AWS_DATA_PATH included), without importing botocore's
            # session, client or HTTP machinery, which the models do not need
            self._loader = _ModelFiles()
        return self._loader

    def service_names(self) -> list[str]:
        """Every botocore service name, sorted."""
        if self._names is None:
            self._names = self._get_loader().list_available_services("service-2")
        return list(self._names)

    def has_service(self, name: str) -> bool:
        """Does botocore have a model of this service? (Asked of its folder alone: listing every service reads some
        400 folders, which a command that maps a few services does not need.)"""
        if self._names is not None:
            return name in self._names
        got = self._has.get(name)
        if got is None:
            loader = self._get_loader()
            got = self._has[name] = bool(_SERVICE_NAME.fullmatch(name)) and any(
                os.path.isdir(folder) and any(loader._exists(os.path.join(folder, v, "service-2"))
                                              for v in os.listdir(folder))
                for folder in (os.path.join(base, name) for base in loader.search_paths))
        return got

    def model(self, name: str) -> ServiceModel | None:
        """One service model by botocore name (``None`` when botocore has no such service)."""
        if name not in self._models:
            self._models[name] = self._load(name)
        return self._models[name]

    def _load(self, name: str) -> ServiceModel | None:
        loader = self._get_loader()
        if not self.has_service(name):
            return None
        try:
            version = loader.determine_latest_version(name, "service-2")
        except Exception:  # pragma: no cover - a broken botocore data dir
            return None
        for base in loader.search_paths:  # fast path: read the file ourselves with orjson
            for fname in ("service-2.json.gz", "service-2.json"):
                path = Path(base) / name / version / fname
                if path.is_file():
                    raw = path.read_bytes()
                    if fname.endswith(".gz"):
                        raw = gzip.decompress(raw)
                    try:
                        import orjson

                        doc = orjson.loads(raw)
                    except ImportError:  # pragma: no cover
                        doc = json.loads(raw)
                    return _parse_model(name, doc)
        try:  # pragma: no cover - unusual loader layouts
            return _parse_model(name, loader.load_service_model(name, "service-2", version))
        except Exception:  # pragma: no cover
            return None

    def _host_index(self) -> dict[str, list[str]]:
        if self._by_host is None:
            index: dict[str, list[str]] = {}
            for name in self.service_names():
                model = self.model(name)
                if model is None:
                    continue
                for key in model.host_keys:
                    index.setdefault(key, []).append(name)
            self._by_host = index
        return self._by_host

    def models_for_host(self, key: str) -> list[ServiceModel]:
        """The models that may be logged under an event-source key (``monitoring``, ``s3``, ``streams.dynamodb``).

        A model whose botocore name equals the key is tried before the full index is built, so the
        common case (``lambda``, ``cloudfront``) loads one file.

        Args:
            key: the output of :func:`host_key`.

        Returns:
            Models whose endpoint prefix, signing name or botocore name is ``key``; endpoint-prefix matches first.
        """
        key = key.lower()
        direct = self.model(key) if self.has_service(key) else None
        if direct is not None and direct.endpoint_prefix.lower() == key and self._by_host is None:
            return [direct]
        names = self._host_index().get(key, [])
        models = [m for m in (self.model(n) for n in names) if m is not None]
        models.sort(key=lambda m: (m.endpoint_prefix.lower() != key, m.signing_name.lower() != key, m.name))
        return models

    def operation(self, key: str, operation: str) -> tuple[ServiceModel, OperationModel] | None:
        """Find an operation among the models of an event-source key.

        Args:
            key: the output of :func:`host_key`.
            operation: the botocore operation name (case-sensitive), e.g. ``GetFunction``.

        Returns:
            ``(model, operation)`` from the first model that has it, or ``None``.
        """
        for model in self.models_for_host(key):
            op = model.operations.get(operation)
            if op is not None:
                return model, op
        return None


@lru_cache(maxsize=1)
def get_botocore_models() -> BotocoreModels:
    """The process-wide botocore model index (created on first use, loaded lazily)."""
    return BotocoreModels()


# ----------------------------------------------------------------------------- AWS Service Reference files
@dataclass
class ServiceReference:
    """A local copy of AWS Service Reference files: ``{"Name": prefix, "Operations": [{"Name", "AuthorizedActions"}]}``.

    Only operations and their authorised actions are read; everything else in the files is ignored.
    """

    directory: str
    operations: dict[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)  # prefix -> file name
    version: str = ""
    problems: list[str] = field(default_factory=list)
    #: ``prefix:action`` (lower-case) -> its ``SupportedBy."IAM Action Last Accessed"`` flag, where the files give one
    last_accessed: dict[str, bool] = field(default_factory=dict)

    def authorized_actions(self, prefix: str, operation: str) -> tuple[str, ...] | None:
        """The ``service:Action`` names an operation needs, or ``None`` when the files do not say.

        Args:
            prefix: the IAM service prefix (the file's ``Name``).
            operation: the API operation name.

        Returns:
            The actions as ``service:Name`` (possibly empty), or ``None`` when the operation is not listed.
        """
        got = self.operations.get((prefix.lower(), operation.lower()))
        if got is None:
            return None
        return tuple(f"{svc}:{name}" for svc, name in got)


def load_service_reference(directory: str | os.PathLike) -> ServiceReference:
    """Read every ``*.json`` file of a directory (recursively) shaped like an AWS Service Reference file.

    Files that are not such documents are skipped and named in ``problems``.

    Args:
        directory: the folder holding e.g. ``s3.json``, ``lambda.json`` (as downloaded from
            ``https://servicereference.us-east-1.amazonaws.com/v1/<service>/<service>.json``).

    Returns:
        The loaded reference.

    Raises:
        FileNotFoundError: when the directory does not exist.
    """
    import hashlib

    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no service reference directory at {root}")
    ref = ServiceReference(str(root))
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.json")):
        raw = path.read_bytes()
        try:
            doc = json.loads(raw)
        except ValueError:
            ref.problems.append(f"{path.name}: not JSON")
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("Name"), str) or not isinstance(doc.get("Operations"), list):
            ref.problems.append(f"{path.name}: not a service reference file (no Name/Operations)")
            continue
        digest.update(path.name.encode() + b"\0" + raw)
        prefix = doc["Name"].lower()
        ref.services[prefix] = path.name
        for op in doc["Operations"]:
            if not isinstance(op, dict) or not op.get("Name"):
                continue
            acts = []
            for a in op.get("AuthorizedActions") or []:
                if isinstance(a, dict) and a.get("Name"):
                    acts.append(((a.get("Service") or prefix).lower(), a["Name"]))
            ref.operations[(prefix, op["Name"].lower())] = tuple(dict.fromkeys(acts))
        for act in doc.get("Actions") or []:
            flag = (act.get("SupportedBy") or {}).get("IAM Action Last Accessed") if isinstance(act, dict) else None
            if isinstance(flag, bool) and isinstance(act.get("Name"), str):
                ref.last_accessed[f"{prefix}:{act['Name'].lower()}"] = flag
    ref.version = f"{len(ref.services)} services, sha256 {digest.hexdigest()[:12]}" if ref.services else "empty"
    return ref


def service_reference_dir(option: str | os.PathLike | None = None) -> str | None:
    """The service reference directory in effect: the option, else ``$MINER_SERVICE_REFERENCE``, else none (offline).

    Args:
        option: a directory given on the command line or by a caller; ``""`` forces none.

    Returns:
        The directory as a string, or ``None`` for none.
    """
    if option is not None:
        return str(option) or None
    return os.environ.get(ENV_SERVICE_REFERENCE) or None
