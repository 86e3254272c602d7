#!/usr/bin/env python3
"""Deterministic generator of realistic AWS CloudTrail logs for the ``miner`` sample data and benchmarks.

It writes the real S3 delivery layout::

    <out>/AWSLogs/<acct>/CloudTrail/<region>/YYYY/MM/DD/<acct>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<16 alnum>.json.gz
    <out>/AWSLogs/o-a1b2c3d4e5/012345678901/CloudTrail/<region>/...            (organization trail member)
    <out>/AWSLogs/111122223333/CloudTrail-Digest/us-east-1/2026/08/02/...        (one digest file)
    <out>/AWSLogs/111122223333/CloudTrail-Insight/us-east-1/2026/08/10/...       (one Insight file)
    <out>/iam/<acct>.json                  (``aws iam get-account-authorization-details`` snapshots)
    <out>/EXPECTED.json, <out>/README.md   (what a correct reader must find; human description)

Each log file is a gzip (``mtime=0``) of compact ``{"Records":[...]}`` JSON. Records are grouped per account
tree and region into delivery batches of 5, 10 or 15 minutes; a file is named after the end of its batch,
so records from just before midnight land in the next day's folder, as they do in real buckets.

Determinism: every random choice comes from ``random.Random`` instances seeded with strings derived from the
seed (``f"{seed}:<topic>:<day>"``; string seeds are hashed with SHA-512 by ``random``, so they do not depend
on ``PYTHONHASHSEED``); the calendar is fixed (2026-08-01 onwards, never the current time); nothing iterates
over a set. Re-running with the same arguments produces byte-identical files.

Usage::

    python scripts/gen_sample_logs.py --out sample_logs [--seed 7] [--days 45] [--scale 1.0]

Library use (the benchmark script)::

    from gen_sample_logs import generate, iter_records
    stats = generate("bench-data", seed=7, days=45, scale=64.0, sample_extras=False, compresslevel=6)  # ~1M
    for record in iter_records(seed=7, days=2): ...

Only the standard library is required; ``orjson`` is used for speed when installed (output is identical:
the records hold no non-integral floats and only ASCII text).
"""

from __future__ import annotations

import argparse
import base64
import calendar
import datetime as dt
import gzip
import hashlib
import json
import os
import random
import shutil
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

try:  # optional speed-up
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    _orjson = None

# --------------------------------------------------------------------------------------------------------------
# Fixed world
# --------------------------------------------------------------------------------------------------------------

START_DATE = dt.date(2026, 8, 1)
DEFAULT_DAYS = 45
DEFAULT_SEED = 7
START_EPOCH = calendar.timegm(START_DATE.timetuple())
DAY = 86400

ACCT_PROD = "111122223333"  # main account (own trail)
ACCT_CI = "444455556666"  # CI / tooling account (own trail)
ACCT_AUDIT = "012345678901"  # organization member, logged by the org trail (leading zero!)
ORG_ID = "o-a1b2c3d4e5"
REGIONS = ("us-east-1", "eu-west-1", "us-west-2")
TRAIL_NAME = "management-and-data"
TRAIL_BUCKET = "acme-cloudtrail-logs-111122223333"

#: account -> key prefix of its log tree
TREES = {
    ACCT_PROD: f"AWSLogs/{ACCT_PROD}",
    ACCT_CI: f"AWSLogs/{ACCT_CI}",
    ACCT_AUDIT: f"AWSLogs/{ORG_ID}/{ACCT_AUDIT}",
}

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HIDDEN = "HIDDEN_DUE_TO_SECURITY_REASONS"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: eventVersion by eventSource (CloudTrail versions differ by service and age of the feature)
_EVENT_VERSION = {
    "s3.amazonaws.com": "1.10",
    "dynamodb.amazonaws.com": "1.09",
    "sqs.amazonaws.com": "1.09",
    "secretsmanager.amazonaws.com": "1.11",
    "signin.amazonaws.com": "1.09",
    "connect.amazonaws.com": "1.09",
    "ecr.amazonaws.com": "1.10",
    "sts.amazonaws.com": "1.08",
}


def _stable_id(prefix: str, name: str, n: int = 17) -> str:
    """An AWS-style unique id (``AROA...``, ``AIDA...``) derived from a name, independent of the seed."""
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    return prefix + digest[:n]


def _stable_uuid(name: str) -> str:
    """A fixed UUID-shaped string derived from a name (KMS key ids, stack ids)."""
    h = hashlib.sha256(name.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


@dataclass(frozen=True)
class Role:
    """An IAM role of the fixed world."""

    account: str
    name: str
    path: str = "/"

    @property
    def arn(self) -> str:
        """The role ARN, path included."""
        return f"arn:aws:iam::{self.account}:role{self.path}{self.name}"

    @property
    def role_id(self) -> str:
        """The role's unique id (AROA...)."""
        return _stable_id("AROA", self.arn)

    def session_arn(self, session: str) -> str:
        """The assumed-role session ARN (the role path is dropped, as CloudTrail does)."""
        return f"arn:aws:sts::{self.account}:assumed-role/{self.name}/{session}"


@dataclass(frozen=True)
class User:
    """An IAM user of the fixed world."""

    account: str
    name: str
    path: str = "/"

    @property
    def arn(self) -> str:
        """The user ARN."""
        return f"arn:aws:iam::{self.account}:user{self.path}{self.name}"

    @property
    def user_id(self) -> str:
        """The user's unique id (AIDA...)."""
        return _stable_id("AIDA", self.arn)

    def access_key(self, n: int) -> str:
        """The user's n-th long-term access key id (AKIA...)."""
        return _stable_id("AKIA", f"{self.arn}#{n}", 16)


ROLE_ORDERS = Role(ACCT_PROD, "orders-api-task", "/service-role/")
ROLE_THUMB = Role(ACCT_PROD, "thumbnailer-lambda")
ROLE_CI = Role(ACCT_PROD, "ci-deploy")
ROLE_SSO = Role(ACCT_PROD, "AWSReservedSSO_AdministratorAccess_0123456789abcdef",
                "/aws-reserved/sso.amazonaws.com/eu-west-1/")
ROLE_AUDIT = Role(ACCT_AUDIT, "audit-readonly")
ROLE_LEGACY = Role(ACCT_PROD, "legacy-batch")
ROLE_UNUSED = Role(ACCT_PROD, "unused-etl")
ROLE_ECS_EXEC = Role(ACCT_PROD, "ecsTaskExecutionRole")
ROLE_WEBHOOK = Role(ACCT_PROD, "orders-webhook-lambda", "/service-role/")
ROLE_ORG_ADMIN = Role(ACCT_AUDIT, "OrganizationAccountAccessRole")
USER_ALICE = User(ACCT_PROD, "alice")
USER_CIBOT = User(ACCT_CI, "ci-bot")

SSO_SESSION = "jane.doe@example.com"
ORDERS_BUCKET = "acme-orders-prod"
MEDIA_BUCKET = "acme-media-uploads"
ARTIFACT_BUCKET = "acme-ci-artifacts-111122223333"
LEGACY_BUCKET = "acme-legacy-exports"
FLOWLOG_BUCKET = "acme-vpc-flow-logs-111122223333"
ORDERS_KEY_ID = "mrk-" + hashlib.sha256(b"orders-key").hexdigest()[:32]
OLD_KEY_ID = _stable_uuid("orders-key-2024")
TRAIL_KEY_ID = _stable_uuid("cloudtrail-key")
CONNECT_INSTANCE = _stable_uuid("connect-instance")
VPCE_S3 = "vpce-0a1b2c3d4e5f60718"
VPCE_DDB = "vpce-0f1e2d3c4b5a69788"
CLOUDFRONT_DIST = "E2QWRUHAPOMQZL"


#: DynamoDB request ids are 52 characters whose last 26 identify the front-end host
_DDB_RID_SUFFIX = ("VV4KQNSO5AEMVJF66Q9ASUAAJG", "B3D7Y2M1LZ8QK0P4RT6WN5XCUA", "K8F2N6Q1VJ4ZX9M3TB7LS0PRGE")


def _kms_arn(region: str, key_id: str = ORDERS_KEY_ID) -> str:
    return f"arn:aws:kms:{region}:{ACCT_PROD}:key/{key_id}"


# --------------------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------------------


def _iso(t: int) -> str:
    """Epoch seconds -> ``YYYY-MM-DDTHH:MM:SSZ``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _cli_date(t: int) -> str:
    """Epoch seconds -> the IAM CLI's ``YYYY-MM-DDTHH:MM:SS+00:00``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def _sts_expiration(t: int) -> str:
    """The non-ISO ``expiration`` form STS writes in responseElements (``Aug 1, 2026, 6:12:44 AM``)."""
    g = time.gmtime(t)
    hour12 = g.tm_hour % 12 or 12
    return f"{_MONTHS[g.tm_mon - 1]} {g.tm_mday}, {g.tm_year}, {hour12}:{g.tm_min:02d}:{g.tm_sec:02d} " \
           f"{'AM' if g.tm_hour < 12 else 'PM'}"


def _uuid(rng: random.Random) -> str:
    """A UUID4 string drawn from ``rng``."""
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _hex(rng: random.Random, n: int) -> str:
    return "%0*x" % (n, rng.getrandbits(4 * n))


def _alnum(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _asia(rng: random.Random) -> str:
    """A temporary access key id."""
    return "ASIA" + _alnum(rng, 16, UPPER_ALNUM)


def _dumps(obj: Any) -> bytes:
    """Compact JSON bytes (orjson when available; identical output for the data written here)."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _gzip(data: bytes, level: int) -> bytes:
    """Reproducible gzip (no timestamp, no file name)."""
    return gzip.compress(data, compresslevel=level, mtime=0)


_HOUR_PROFILES = {
    # UTC hour weights
    "business": (0, 0, 0, 0, 0, 1, 2, 4, 7, 9, 10, 10, 10, 10, 10, 10, 9, 8, 6, 4, 3, 2, 1, 1),
    "app": (0, 1, 1, 1, 1, 2, 3, 5, 7, 8, 9, 10, 12, 13, 14, 14, 13, 12, 10, 8, 6, 4, 3, 2),
    "flat": (1,) * 24,
    "ci": (0, 0, 0, 0, 0, 0, 0, 1, 3, 5, 7, 8, 8, 8, 8, 8, 7, 5, 3, 1, 0, 0, 0, 0),
}
_HOUR_CUM = {k: [sum(v[: i + 1]) for i in range(24)] for k, v in _HOUR_PROFILES.items()}
_HOURS = list(range(24))


def _time_of_day(rng: random.Random, profile: str) -> int:
    """Seconds after midnight, hour drawn from an hourly profile."""
    hour = rng.choices(_HOURS, cum_weights=_HOUR_CUM[profile])[0]
    return hour * 3600 + rng.randrange(3600)


def _scaled(rng: random.Random, mean: float) -> int:
    """An integer count around ``mean`` (uniform +-40 %), never negative."""
    if mean <= 0:
        return 0
    lo, hi = mean * 0.6, mean * 1.4
    x = lo + (hi - lo) * rng.random()
    n = int(x)
    return n + (1 if rng.random() < x - n else 0)


# user agents
UA_BOTO_APP = ("Boto3/1.26.90 Python/3.11.6 Linux/5.10.219-208.866.amzn2.x86_64 exec-env/AWS_ECS_FARGATE "
               "Botocore/1.29.90")
UA_BOTO_LAMBDA = ("Boto3/1.34.145 md/Botocore#1.34.145 ua/2.0 os/linux#5.10.224-233.880.amzn2.x86_64 md/arch#x86_64 "
                  "lang/python#3.12.5 md/pyimpl#CPython exec-env/AWS_Lambda_python3.12 cfg/retry-mode#legacy "
                  "Botocore/1.34.145")
UA_CLI_ALICE = ("aws-cli/2.17.20 md/awscrt#0.20.11 ua/2.0 os/macos#23.5.0 md/arch#arm64 lang/python#3.11.9 "
                "md/pyimpl#CPython cfg/retry-mode#standard md/installer#source md/prompt#off md/command#{cmd}")
UA_CLI_CI = ("aws-cli/2.17.33 md/awscrt#0.21.2 ua/2.0 os/linux#6.5.0-1025-azure md/arch#x86_64 lang/python#3.11.9 "
             "md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.22 md/prompt#off "
             "md/command#{cmd}")
UA_BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/127.0.0.0 Safari/537.36")
UA_S3_CONSOLE = ("[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.750 Linux/5.10.223-190.873.amzn2int.x86_64 "
                 "OpenJDK_64-Bit_Server_VM/25.412-b09 java/1.8.0_412 vendor/Oracle_Corporation "
                 "cfg/retry-mode/standard]")

TLS13 = ("TLSv1.3", "TLS_AES_128_GCM_SHA256")
TLS12 = ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")


# --------------------------------------------------------------------------------------------------------------
# Record construction
# --------------------------------------------------------------------------------------------------------------


def _assumed(role: Role, session: str, akid: str, created: int, *, invoked_by: str | None = None,
             ec2_delivery: bool = False) -> dict:
    """userIdentity of an AssumedRole session (the session ARN drops the role path; sessionIssuer keeps it)."""
    ctx: dict[str, Any] = {
        "sessionIssuer": {"type": "Role", "principalId": role.role_id, "arn": role.arn,
                          "accountId": role.account, "userName": role.name},
        "webIdFederationData": {},
        "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "false"},
    }
    if ec2_delivery:
        ctx["ec2RoleDelivery"] = "2.0"
    ident: dict[str, Any] = {"type": "AssumedRole", "principalId": f"{role.role_id}:{session}",
                             "arn": role.session_arn(session), "accountId": role.account,
                             "accessKeyId": akid, "sessionContext": ctx}
    if invoked_by:
        ident["invokedBy"] = invoked_by
    return ident


def _iam_user(user: User, akid: str | None) -> dict:
    """userIdentity of an IAM user (``akid=None`` for a console sign-in, which carries no key)."""
    ident = {"type": "IAMUser", "principalId": user.user_id, "arn": user.arn, "accountId": user.account}
    if akid is not None:
        ident["accessKeyId"] = akid
    ident["userName"] = user.name
    return ident


def _service(host: str) -> dict:
    """userIdentity of an AWS service principal: no arn, no accountId."""
    return {"type": "AWSService", "invokedBy": host}


class _Emitter:
    """Builds records for one generator-day and collects ``(account, region, epoch, record)`` entries."""

    def __init__(self, rng: random.Random, entries: list, oddities: dict):
        self.rng = rng
        self.entries = entries
        self.oddities = oddities

    def rec(self, ident: dict, t: int, source: str, name: str, region: str, ip: str | None, ua: str | None,
            req: Any, resp: Any = None, *, read_only: bool, account: str = ACCT_PROD, data: bool = False,
            resources: list | None = None, error: tuple[str, str | None] | None = None, add: dict | None = None,
            request_id: str | None = None, host: str | None = None, tls: tuple[str, str] | None = TLS13,
            vpce: str | None = None, shared: str | None = None, event_type: str = "AwsApiCall",
            console: bool = False, log_region: str | None = None, version: str | None = None) -> dict:
        """Append one record (field order as CloudTrail writes it) and return it.

        ``log_region`` is the folder region of the delivery (defaults to ``region``); ``account`` is both the
        recipientAccountId and the log tree.
        """
        rng = self.rng
        r: dict[str, Any] = {
            "eventVersion": version or _EVENT_VERSION.get(source, "1.08"),
            "userIdentity": ident,
            "eventTime": _iso(t),
            "eventSource": source,
            "eventName": name,
            "awsRegion": region,
            "sourceIPAddress": ip,
            "userAgent": ua,
        }
        if error is not None:  # (errorCode, errorMessage); either may be None
            if error[0] is not None:
                r["errorCode"] = error[0]
            if error[1] is not None:
                r["errorMessage"] = error[1]
        r["requestParameters"] = req
        r["responseElements"] = resp
        if add is not None:
            r["additionalEventData"] = add
        r["requestID"] = request_id or _uuid(rng)
        r["eventID"] = _uuid(rng)
        r["readOnly"] = read_only
        if resources is not None:
            r["resources"] = resources
        r["eventType"] = event_type
        r["managementEvent"] = not data
        r["recipientAccountId"] = account
        if shared:
            r["sharedEventID"] = shared
        if vpce:
            r["vpcEndpointId"] = vpce
            r["vpcEndpointAccountId"] = account
        r["eventCategory"] = "Data" if data else "Management"
        if tls is not None and host:
            r["tlsDetails"] = {"tlsVersion": tls[0], "cipherSuite": tls[1], "clientProvidedHostHeader": host}
        if console:
            r["sessionCredentialFromConsole"] = "true"
        self.entries.append((account, log_region or region, t, r))
        return r

    # ---- service-specific shapes -----------------------------------------------------------------------------

    def s3(self, ident: dict, t: int, name: str, bucket: str, key: str | None, ip: str, ua: str, *,
           region: str = "us-east-1", read_only: bool, extra_req: dict | None = None, object_res: str = "arn",
           error: tuple[str, str | None] | None = None, vpce: str | None = None, bytes_in: Any = 0,
           bytes_out: Any = 0, data: bool = True, account: str = ACCT_PROD, tls: tuple[str, str] | None = TLS13,
           bucket_resource: bool = True, x_amz_pool: list[str] | None = None, resp: Any = None,
           shared: str | None = None) -> dict:
        """An S3 API record (data or bucket-level management) with the real S3 request/resource shapes.

        ``object_res``: ``"arn"`` (object ARN), ``"prefix"`` (``ARNPrefix`` of the bucket, as ListObjects and
        HeadBucket log it) or ``"none"``.
        """
        rng = self.rng
        host = f"{bucket}.s3.{region}.amazonaws.com"
        req: dict[str, Any] = {"bucketName": bucket, "Host": host}
        if extra_req:
            req.update(extra_req)
        if key is not None:
            req["key"] = key
        resources: list[dict] = []
        if object_res == "arn" and key is not None:
            resources.append({"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"})
        elif object_res == "prefix":
            resources.append({"type": "AWS::S3::Object", "ARNPrefix": f"arn:aws:s3:::{bucket}/"})
        if bucket_resource:
            resources.append({"accountId": ACCT_PROD, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"})
        pool = x_amz_pool
        xid = rng.choice(pool) if pool else base64.b64encode(rng.randbytes(56)).decode()
        add = {"SignatureVersion": "SigV4", "CipherSuite": tls[1] if tls else "TLS_AES_128_GCM_SHA256",
               "bytesTransferredIn": bytes_in, "AuthenticationMethod": "AuthHeader", "x-amz-id-2": xid,
               "bytesTransferredOut": bytes_out}
        return self.rec(ident, t, "s3.amazonaws.com", name, region, ip, ua, req, resp, read_only=read_only,
                        account=account, data=data, resources=resources, error=error, add=add,
                        request_id=_alnum(rng, 16, UPPER_ALNUM), host=host, tls=tls, vpce=vpce, shared=shared)

    def ddb(self, ident: dict, t: int, name: str, region: str, req: dict, ip: str, ua: str, *, read_only: bool,
            error: tuple[str, str | None] | None = None, vpce: str | None = None, table: str = "orders") -> dict:
        """A DynamoDB data event on a table (``orders`` by default; the resource is always the table ARN)."""
        rng = self.rng
        table_arn = f"arn:aws:dynamodb:{region}:{ACCT_PROD}:table/{table}"
        return self.rec(ident, t, "dynamodb.amazonaws.com", name, region, ip, ua, req, None, read_only=read_only,
                        data=True, resources=[{"accountId": ACCT_PROD, "type": "AWS::DynamoDB::Table",
                                               "ARN": table_arn}],
                        error=error, request_id=_alnum(rng, 26, UPPER_ALNUM) + rng.choice(_DDB_RID_SUFFIX),
                        host=f"dynamodb.{region}.amazonaws.com", vpce=vpce)

    def assume_role(self, ident: dict, t: int, role: Role, session: str, ip: str, ua: str, *, account: str,
                    akid: str, duration: int | None = None, region: str = "us-east-1", shared: str | None = None,
                    host: str | None = None, tls: tuple[str, str] | None = None, extra_req: dict | None = None,
                    request_id: str | None = None) -> dict:
        """An sts:AssumeRole record; ``account`` is the recipient (caller's or role owner's) account."""
        req: dict[str, Any] = {"roleArn": role.arn, "roleSessionName": session}
        if duration:
            req["durationSeconds"] = duration
        if extra_req:
            req.update(extra_req)
        resp = {"credentials": {"accessKeyId": akid, "sessionToken": HIDDEN,
                                "expiration": _sts_expiration(t + (duration or 3600))},
                "assumedRoleUser": {"assumedRoleId": f"{role.role_id}:{session}", "arn": role.session_arn(session)}}
        return self.rec(ident, t, "sts.amazonaws.com", "AssumeRole", region, ip, ua, req, resp, read_only=True,
                        account=account, resources=[{"accountId": role.account, "type": "AWS::IAM::Role",
                                                     "ARN": role.arn}],
                        shared=shared or _uuid(self.rng), host=host, tls=tls, request_id=request_id)

    def mark(self, name: str, record: dict, **info: Any) -> None:
        """Remember a deliberate oddity (first one wins)."""
        if name not in self.oddities:
            self.oddities[name] = {"eventID": record["eventID"], **info}


# --------------------------------------------------------------------------------------------------------------
# Principals: one function per principal, each called once per day with its own RNG
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Day:
    """Context of one generated day."""

    seed: int
    index: int  # 0-based day number
    start: int  # epoch of 00:00Z
    scale: float
    oddities: dict
    entries: list = field(default_factory=list)
    busy: list = field(default_factory=list)  # end times of us-east-1 traffic bursts (deliveries follow them)

    @property
    def date(self) -> dt.date:
        """Calendar date of the day."""
        return START_DATE + dt.timedelta(days=self.index)

    @property
    def weekday(self) -> int:
        """0 = Monday."""
        return self.date.weekday()

    def emitter(self, topic: str) -> _Emitter:
        """An emitter with an RNG private to (seed, topic, day)."""
        return _Emitter(random.Random(f"{self.seed}:{topic}:{self.index}"), self.entries, self.oddities)


_APP_OPS = (  # (op, weight) for orders-api request traffic
    ("ddb_get", 24), ("ddb_query_index", 12), ("ddb_query", 4), ("ddb_put", 8), ("ddb_update", 8),
    ("s3_get", 7), ("s3_put", 5), ("sqs_send", 7), ("sqs_receive", 10), ("sqs_delete", 6),
    ("kms_decrypt", 4), ("kms_gdk", 4),
)
_APP_OP_NAMES = [o for o, _ in _APP_OPS]
_APP_OP_CUM = [sum(w for _, w in _APP_OPS[: i + 1]) for i in range(len(_APP_OPS))]


def _gen_orders_api(day: _Day) -> None:
    """orders-api-task: ECS tasks in us-east-1 (main) and eu-west-1, bursts of order traffic.

    Also emits the ecs-tasks.amazonaws.com AssumeRole events that hand out task credentials (at task start and
    whenever the credentials in use are older than 6 hours) and the ecsTaskExecutionRole calls of the ECS agent
    at task start (two tasks per region are replaced every night).
    """
    e = day.emitter("orders-api")
    rng = e.rng
    xpool = [base64.b64encode(rng.randbytes(56)).decode() for _ in range(3)]
    for region, bursts_mean in (("us-east-1", 2.5), ("eu-west-1", 0.8)):
        kms_arn = _kms_arn(region)
        queue = f"https://sqs.{region}.amazonaws.com/{ACCT_PROD}/orders-events"
        t_deploy = day.start + rng.randrange(600, 2400)
        tasks = []
        for k in range(2):
            tasks.append({"id": _hex(rng, 32), "start": t_deploy + k * rng.randrange(40, 120), "creds": None,
                          "ip": f"203.0.113.{rng.randrange(10, 250)}",
                          "priv": f"10.0.{rng.randrange(1, 60)}.{rng.randrange(2, 250)}"})

        def identity(task: dict, t: int) -> dict:
            """The task's role session at ``t``; a fresh AssumeRole when the credentials are 6 h old."""
            if task["creds"] is None or t - task["creds"][1] > 6 * 3600:
                issued = t - rng.randrange(5, 90)
                akid = _asia(rng)
                task["creds"] = (akid, issued)
                e.assume_role(_service("ecs-tasks.amazonaws.com"), issued, ROLE_ORDERS, task["id"],
                              "ecs-tasks.amazonaws.com", "ecs-tasks.amazonaws.com", account=ACCT_PROD, akid=akid,
                              region=region)
            return _assumed(ROLE_ORDERS, task["id"], *task["creds"])

        repo_arn = f"arn:aws:ecr:us-east-1:{ACCT_PROD}:repository/orders-api"
        for task in tasks:  # task start: the ECS agent (execution role) first, then the application
            t0 = task["start"]
            ex_akid = _asia(rng)
            e.assume_role(_service("ecs-tasks.amazonaws.com"), t0 - 20, ROLE_ECS_EXEC, task["id"],
                          "ecs-tasks.amazonaws.com", "ecs-tasks.amazonaws.com", account=ACCT_PROD, akid=ex_akid,
                          region=region)
            ex = _assumed(ROLE_ECS_EXEC, task["id"], ex_akid, t0 - 20, invoked_by="ecs-tasks.amazonaws.com")
            e.rec(ex, t0 - 15, "ecr.amazonaws.com", "GetAuthorizationToken", region, "ecs-tasks.amazonaws.com",
                  "ecs-tasks.amazonaws.com", {"registryIds": [ACCT_PROD]}, None, read_only=True, tls=None)
            e.rec(ex, t0 - 14, "ecr.amazonaws.com", "BatchGetImage", "us-east-1", "ecs-tasks.amazonaws.com",
                  "ecs-tasks.amazonaws.com",
                  {"registryId": ACCT_PROD, "repositoryName": "orders-api", "imageIds": [{"imageTag": "prod"}],
                   "acceptedMediaTypes": ["application/vnd.docker.distribution.manifest.v2+json"]}, None,
                  read_only=True, resources=[{"accountId": ACCT_PROD, "ARN": repo_arn}], tls=None)
            e.rec(ex, t0 - 13, "ecr.amazonaws.com", "GetDownloadUrlForLayer", "us-east-1",
                  "ecs-tasks.amazonaws.com", "ecs-tasks.amazonaws.com",
                  {"registryId": ACCT_PROD, "repositoryName": "orders-api", "layerDigest": "sha256:" + _hex(rng, 64)},
                  None, read_only=True, resources=[{"accountId": ACCT_PROD, "ARN": repo_arn}], tls=None)
            e.rec(ex, t0 - 8, "logs.amazonaws.com", "CreateLogStream", region, "ecs-tasks.amazonaws.com",
                  "ecs-tasks.amazonaws.com",
                  {"logGroupName": "/ecs/orders-api", "logStreamName": f"ecs/orders-api/{task['id']}"}, None,
                  read_only=False, tls=None)
            ident = identity(task, t0)
            e.rec(ident, t0 + 5, "logs.amazonaws.com", "CreateLogStream", region, task["ip"], UA_BOTO_APP,
                  {"logGroupName": "/app/orders-api", "logStreamName": f"app/{task['id']}"}, None, read_only=False,
                  host=f"logs.{region}.amazonaws.com")
            err = ("ThrottlingException", "Rate exceeded") if rng.random() < 0.03 else None
            e.rec(ident, t0 + 6, "secretsmanager.amazonaws.com", "GetSecretValue", region, task["ip"],
                  UA_BOTO_APP, {"secretId": "orders/db-credentials"}, None, read_only=True, error=err,
                  host=f"secretsmanager.{region}.amazonaws.com")

        for _ in range(_scaled(rng, bursts_mean * day.scale)):
            t = day.start + max(3600, _time_of_day(rng, "app"))
            task = tasks[rng.randrange(2)]
            ident = identity(task, t)
            for _ in range(rng.randint(60, 120)):
                t += rng.randrange(0, 5)
                op = rng.choices(_APP_OP_NAMES, cum_weights=_APP_OP_CUM)[0]
                _orders_op(e, ident, t, region, op, task["ip"], task["priv"], kms_arn, queue, xpool, day)
            if region == "us-east-1":
                day.busy.append(t)

        if region != "us-east-1":
            continue
        # the nightly job (us-east-1 only): PartiQL report, archive copies, cleanup, export, key rotation
        task = tasks[0]
        t = day.start + 2 * 3600 + rng.randrange(600, 1800)
        ident = identity(task, t)
        e.ddb(ident, t, "ExecuteStatement", region,
              {"statement": 'SELECT "orderId", "total" FROM "orders"."by-customer" WHERE "customerId" = ?',
               "parameters": HIDDEN}, task["ip"], UA_BOTO_APP, read_only=True)
        for _ in range(2):
            t += rng.randrange(2, 20)
            src = _invoice_key(rng, day)
            e.s3(ident, t, "CopyObject", ORDERS_BUCKET, "archive/" + src, task["priv"], f"[{UA_BOTO_APP}]",
                 read_only=False, extra_req={"x-amz-copy-source": f"{ORDERS_BUCKET}/{src}"}, vpce=VPCE_S3,
                 x_amz_pool=xpool, bytes_out=234)
        t += rng.randrange(2, 20)
        e.s3(ident, t, "DeleteObjects", ORDERS_BUCKET, None, task["priv"], f"[{UA_BOTO_APP}]", read_only=False,
             extra_req={"delete": ""}, object_res="prefix", vpce=VPCE_S3, x_amz_pool=xpool, bytes_in=412,
             bytes_out=380)
        if day.index % 3 == 1:  # multipart upload of the export
            t += rng.randrange(2, 20)
            key = f"exports/{day.date:%Y/%m/%d}/orders-{day.date:%Y%m%d}.csv.gz"
            upload_id = _alnum(rng, 40) + "--"
            e.s3(ident, t, "CreateMultipartUpload", ORDERS_BUCKET, key, task["priv"], f"[{UA_BOTO_APP}]",
                 read_only=False, extra_req={"uploads": ""}, vpce=VPCE_S3, x_amz_pool=xpool, bytes_out=402)
            for part in range(1, rng.randint(3, 5)):
                e.s3(ident, t + part * 4, "UploadPart", ORDERS_BUCKET, key, task["priv"], f"[{UA_BOTO_APP}]",
                     read_only=False, extra_req={"partNumber": str(part), "uploadId": upload_id}, vpce=VPCE_S3,
                     x_amz_pool=xpool, bytes_in=8388608)
            t += 30
            e.s3(ident, t, "CompleteMultipartUpload", ORDERS_BUCKET, key, task["priv"], f"[{UA_BOTO_APP}]",
                 read_only=False, extra_req={"uploadId": upload_id}, vpce=VPCE_S3, x_amz_pool=xpool,
                 bytes_in=512, bytes_out=390)
        if day.index % 2 == 0:  # re-encrypt a stored data key under the new key
            t += rng.randrange(2, 20)
            old, new = _kms_arn(region, OLD_KEY_ID), kms_arn
            e.rec(ident, t, "kms.amazonaws.com", "ReEncrypt", region, task["ip"], UA_BOTO_APP,
                  {"destinationKeyId": new, "sourceEncryptionAlgorithm": "SYMMETRIC_DEFAULT",
                   "destinationEncryptionAlgorithm": "SYMMETRIC_DEFAULT"}, None, read_only=True,
                  resources=[{"accountId": ACCT_PROD, "type": "AWS::KMS::Key", "ARN": old},
                             {"accountId": ACCT_PROD, "type": "AWS::KMS::Key", "ARN": new}],
                  host=f"kms.{region}.amazonaws.com")
        _orders_reports(day, ident, t, task)


#: Tenants of the orders API: each has its own report prefix (a small closed set a policy may list).
TENANTS = ("acme", "globex", "initech")


def _orders_reports(day: _Day, ident: dict, t: int, task: dict) -> None:
    """The nightly per-tenant reports (``tenants/<tenant>/reports/YYYY/MM/DD/report-<uuid>.json``) and an audit row
    in the table of the month (``orders-audit-YYYY-MM``: a name that rotates). A private RNG stream, so the records
    of the other generators do not move."""
    e = day.emitter("orders-reports")
    rng = e.rng
    xpool = [base64.b64encode(rng.randbytes(56)).decode() for _ in range(3)]
    for tenant in TENANTS:
        t += rng.randrange(5, 40)
        key = f"tenants/{tenant}/reports/{day.date:%Y/%m/%d}/report-{_uuid(rng)}.json"
        e.s3(ident, t, "PutObject", ORDERS_BUCKET, key, task["priv"], f"[{UA_BOTO_APP}]", read_only=False,
             vpce=VPCE_S3, x_amz_pool=xpool, bytes_in=rng.randrange(2000, 20000))
        e.s3(ident, t + rng.randrange(1, 5), "GetObject", ORDERS_BUCKET, key, task["priv"], f"[{UA_BOTO_APP}]",
             read_only=True, vpce=VPCE_S3, x_amz_pool=xpool, bytes_out=rng.randrange(2000, 20000))
    t += rng.randrange(5, 40)
    e.ddb(ident, t, "PutItem", "us-east-1", {"tableName": f"orders-audit-{day.date:%Y-%m}", "item": HIDDEN},
          task["ip"], UA_BOTO_APP, read_only=False, table=f"orders-audit-{day.date:%Y-%m}")


def _invoice_key(rng: random.Random, day: _Day) -> str:
    return f"invoices/{day.date:%Y/%m}/ord-{rng.randrange(10**9):09d}.pdf"


def _orders_op(e: _Emitter, ident: dict, t: int, region: str, op: str, ip: str, priv: str, kms_arn: str,
               queue: str, xpool: list[str], day: _Day) -> None:
    """One request of the orders API."""
    rng = e.rng
    ua = UA_BOTO_APP
    if op.startswith("ddb_"):
        via_vpce = rng.random() < 0.5
        src_ip, vpce = (priv, VPCE_DDB) if via_vpce else (ip, None)
        if op == "ddb_get":
            r = e.ddb(ident, t, "GetItem", region, {"tableName": "orders", "key": {"orderId": HIDDEN},
                                                     "consistentRead": False}, src_ip, ua, read_only=True, vpce=vpce)
            if day.index == 6 and t >= day.start + 12 * 3600:  # oddity: requestParameters null on a data event
                if "request_parameters_null" not in e.oddities:
                    r["requestParameters"] = None
                    e.mark("request_parameters_null", r, principal=ROLE_ORDERS.arn, eventName="GetItem",
                           note="requestParameters is null; the table ARN is only in resources[]")
        elif op == "ddb_query_index":
            e.ddb(ident, t, "Query", region, {"tableName": "orders", "indexName": "by-customer",
                                              "keyConditionExpression": HIDDEN, "expressionAttributeValues": HIDDEN,
                                              "limit": 25}, src_ip, ua, read_only=True, vpce=vpce)
        elif op == "ddb_query":
            e.ddb(ident, t, "Query", region, {"tableName": "orders", "keyConditionExpression": HIDDEN,
                                              "expressionAttributeValues": HIDDEN}, src_ip, ua, read_only=True,
                  vpce=vpce)
        elif op == "ddb_put":
            e.ddb(ident, t, "PutItem", region, {"tableName": "orders", "key": {"orderId": HIDDEN},
                                                "item": HIDDEN, "conditionExpression": HIDDEN},
                  src_ip, ua, read_only=False, vpce=vpce)
        else:
            err = ("ConditionalCheckFailedException", "The conditional request failed") \
                if rng.random() < 0.02 else None
            e.ddb(ident, t, "UpdateItem", region, {"tableName": "orders", "key": {"orderId": HIDDEN},
                                                   "updateExpression": HIDDEN, "conditionExpression": HIDDEN,
                                                   "expressionAttributeValues": HIDDEN}, src_ip, ua,
                  read_only=False, error=err, vpce=vpce)
    elif op in ("s3_get", "s3_put"):
        key = _invoice_key(rng, day)
        if op == "s3_get":
            e.s3(ident, t, "GetObject", ORDERS_BUCKET, key, priv, f"[{ua}]", read_only=True, vpce=VPCE_S3,
                 x_amz_pool=xpool, bytes_out=rng.randrange(20000, 90000))
        else:
            e.s3(ident, t, "PutObject", ORDERS_BUCKET, key, priv, f"[{ua}]", read_only=False, vpce=VPCE_S3,
                 extra_req={"x-amz-server-side-encryption": "aws:kms",
                            "x-amz-server-side-encryption-aws-kms-key-id": _kms_arn("us-east-1")},
                 x_amz_pool=xpool, bytes_in=rng.randrange(20000, 90000))
    elif op.startswith("sqs_"):
        host = f"sqs.{region}.amazonaws.com"
        if op == "sqs_send":
            e.rec(ident, t, "sqs.amazonaws.com", "SendMessage", region, ip, ua,
                  {"queueUrl": queue, "messageBody": HIDDEN, "messageAttributes": HIDDEN}, None, read_only=False,
                  data=True, host=host)
        elif op == "sqs_receive":
            e.rec(ident, t, "sqs.amazonaws.com", "ReceiveMessage", region, ip, ua,
                  {"queueUrl": queue, "maxNumberOfMessages": 10, "waitTimeSeconds": 20,
                   "messageSystemAttributeNames": ["All"]}, None, read_only=True, data=True, host=host)
        else:
            e.rec(ident, t, "sqs.amazonaws.com", "DeleteMessage", region, ip, ua,
                  {"queueUrl": queue, "receiptHandle": HIDDEN}, None, read_only=False, data=True, host=host)
    else:
        host = f"kms.{region}.amazonaws.com"
        res = [{"accountId": ACCT_PROD, "type": "AWS::KMS::Key", "ARN": kms_arn}]
        ctx = {"app": "orders-api", "purpose": "invoice-signing"}
        if op == "kms_decrypt":
            e.rec(ident, t, "kms.amazonaws.com", "Decrypt", region, ip, ua,
                  {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "encryptionContext": ctx}, None, read_only=True,
                  resources=res, host=host)
        else:
            err = ("ThrottlingException", "Rate exceeded") if rng.random() < 0.015 else None
            e.rec(ident, t, "kms.amazonaws.com", "GenerateDataKey", region, ip, ua,
                  {"keyId": "alias/orders", "keySpec": "AES_256", "encryptionContext": ctx}, None, read_only=True,
                  resources=res, host=host, error=err)


def _gen_thumbnailer(day: _Day) -> None:
    """thumbnailer-lambda: S3-triggered Lambda; GetObject incoming/, PutObject thumbnails/; a few NoSuchKey."""
    e = day.emitter("thumbnailer")
    rng = e.rng
    region = "us-east-1"
    xpool = [base64.b64encode(rng.randbytes(56)).decode() for _ in range(3)]
    env: dict | None = None
    for _ in range(_scaled(rng, 1.6 * day.scale)):
        t = day.start + _time_of_day(rng, "app")
        if env is None or rng.random() < 0.5 or t - env["issued"] > 6 * 3600 or t < env["issued"]:
            akid = _asia(rng)
            issued = t - rng.randrange(1, 4)
            e.assume_role(_service("lambda.amazonaws.com"), issued, ROLE_THUMB, "thumbnailer",
                          "lambda.amazonaws.com", "lambda.amazonaws.com", account=ACCT_PROD, akid=akid,
                          region=region)
            env = {"akid": akid, "issued": issued, "ip": f"203.0.113.{rng.randrange(100, 200)}",
                   "stream": f"{day.date:%Y/%m/%d}/[$LATEST]{_hex(rng, 32)}"}
            ident = _assumed(ROLE_THUMB, "thumbnailer", akid, issued)
            e.rec(ident, issued + 1, "logs.amazonaws.com", "CreateLogStream", region, env["ip"], "awslambda-worker",
                  {"logGroupName": "/aws/lambda/thumbnailer", "logStreamName": env["stream"]}, None,
                  read_only=False, host=f"logs.{region}.amazonaws.com")
        ident = _assumed(ROLE_THUMB, "thumbnailer", env["akid"], env["issued"])
        for _ in range(rng.randint(6, 14)):
            t += rng.randrange(1, 12)
            image = _uuid(rng)
            src = f"incoming/{day.date:%Y/%m/%d}/{image}.jpg"
            missing = rng.random() < 0.012
            err = ("NoSuchKey", "The specified key does not exist.") if missing else None
            r = e.s3(ident, t, "GetObject", MEDIA_BUCKET, src, env["ip"], f"[{UA_BOTO_LAMBDA}]", read_only=True,
                     error=err, x_amz_pool=xpool, bytes_out=0 if missing else rng.randrange(200000, 4000000))
            if day.index == 9 and not missing and "resources_null" not in e.oddities:
                r["resources"] = None
                e.mark("resources_null", r, principal=ROLE_THUMB.arn, eventName="GetObject",
                       note="resources is null; the object ARN must be built from requestParameters")
            if missing:
                continue
            e.s3(ident, t + rng.randrange(1, 3), "PutObject", MEDIA_BUCKET, f"thumbnails/{image}_256.jpg",
                 env["ip"], f"[{UA_BOTO_LAMBDA}]", read_only=False, x_amz_pool=xpool,
                 extra_req={"Content-Type": "image/jpeg"}, bytes_in=rng.randrange(8000, 30000))


def _ci_ua(cmd: str) -> str:
    return UA_CLI_CI.format(cmd=cmd)


def _gen_ci(day: _Day) -> None:
    """ci-bot (account 444455556666) assumes ci-deploy cross-account and deploys (weekdays)."""
    e = day.emitter("ci")
    rng = e.rng
    if day.weekday >= 5:
        return
    n_deploys = _scaled(rng, 2.0 * min(day.scale, 3.0))
    for k in range(n_deploys):
        t = day.start + _time_of_day(rng, "ci")
        run_id = 10_400_000_000 + day.index * 1000 + k * 37 + rng.randrange(30)
        session = f"gha-{run_id}"
        runner_ip = f"192.0.2.{rng.randrange(10, 250)}"
        sha = _hex(rng, 40)
        # ---- 444455556666: the CI user identifies itself and assumes the deploy role ----
        bot_key = USER_CIBOT.access_key(1)
        bot = _iam_user(USER_CIBOT, bot_key)
        e.rec(bot, t, "sts.amazonaws.com", "GetCallerIdentity", "us-east-1", runner_ip,
              _ci_ua("sts.get-caller-identity"), None,
              {"userId": USER_CIBOT.user_id, "account": ACCT_CI, "arn": USER_CIBOT.arn}, read_only=True,
              account=ACCT_CI, host="sts.us-east-1.amazonaws.com")
        akid = _asia(rng)
        shared = _uuid(rng)
        request_id = _uuid(rng)
        t += 2
        e.assume_role(bot, t, ROLE_CI, session, runner_ip, _ci_ua("sts.assume-role"), account=ACCT_CI, akid=akid,
                      duration=3600, shared=shared, host="sts.us-east-1.amazonaws.com", tls=TLS13,
                      request_id=request_id)
        # the same call as the role owner's trail sees it: an AWSAccount caller
        e.assume_role({"type": "AWSAccount", "principalId": USER_CIBOT.user_id, "accountId": ACCT_CI}, t, ROLE_CI,
                      session, runner_ip, _ci_ua("sts.assume-role"), account=ACCT_PROD, akid=akid, duration=3600,
                      shared=shared, request_id=request_id)
        ident = _assumed(ROLE_CI, session, akid, t)

        def call(dt_s: int, source: str, name: str, region: str, req: Any, resp: Any = None, *, cmd: str,
                 read_only: bool, host: str | None = None, **kw: Any) -> dict:
            """One ci-deploy call ``dt_s`` seconds after the previous one."""
            nonlocal t
            t += dt_s
            svc = source.split(".")[0]
            return e.rec(ident, t, source, name, region, runner_ip, _ci_ua(cmd), req, resp, read_only=read_only,
                         host=host or f"{svc}.{region}.amazonaws.com", **kw)

        call(3, "ecr.amazonaws.com", "GetAuthorizationToken", "us-east-1", {}, None,
             cmd="ecr.get-login-password", read_only=True, host="api.ecr.us-east-1.amazonaws.com")
        for key in (f"orders-api/{sha}/template.yaml", f"thumbnailer/{sha}.zip"):
            t += rng.randrange(2, 9)
            e.s3(ident, t, "PutObject", ARTIFACT_BUCKET, key, runner_ip, f"[{_ci_ua('s3.cp')}]", read_only=False,
                 bytes_in=rng.randrange(4000, 900000))
        regions = ["us-east-1"] + (["eu-west-1"] if rng.random() < 0.5 else [])
        for region in regions:
            td_rev = 100 + day.index * 3 + k
            call(4, "ecs.amazonaws.com", "RegisterTaskDefinition", region,
                 {"family": "orders-api", "taskRoleArn": ROLE_ORDERS.arn, "executionRoleArn": ROLE_ECS_EXEC.arn,
                  "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "512", "memory": "1024",
                  "containerDefinitions": [{"name": "app", "image": f"{ACCT_PROD}.dkr.ecr.us-east-1.amazonaws.com/"
                                                                     f"orders-api:{sha[:12]}", "essential": True}]},
                 {"taskDefinition": {"taskDefinitionArn": f"arn:aws:ecs:{region}:{ACCT_PROD}:task-definition/"
                                                          f"orders-api:{td_rev}", "revision": td_rev,
                                     "status": "ACTIVE"}},
                 cmd="ecs.register-task-definition", read_only=False)
            stack = "orders-api-prod" if region == "us-east-1" else "orders-api-prod-eu"
            stack_id = f"arn:aws:cloudformation:{region}:{ACCT_PROD}:stack/{stack}/{_stable_uuid(stack)}"
            call(2, "cloudformation.amazonaws.com", "DescribeStacks", region, {"stackName": stack}, None,
                 cmd="cloudformation.describe-stacks", read_only=True)
            call(3, "cloudformation.amazonaws.com", "UpdateStack", region,
                 {"stackName": stack,
                  "templateURL": f"https://{ARTIFACT_BUCKET}.s3.amazonaws.com/orders-api/{sha}/template.yaml",
                  "parameters": [{"parameterKey": "ImageTag", "parameterValue": sha[:12]}],
                  "capabilities": ["CAPABILITY_IAM"]},
                 {"stackId": stack_id}, cmd="cloudformation.deploy", read_only=False)
            for _ in range(rng.randint(2, 5)):
                call(rng.randrange(10, 40), "cloudformation.amazonaws.com", "DescribeStacks", region,
                     {"stackName": stack}, None, cmd="cloudformation.deploy", read_only=True)
            fn_arn = f"arn:aws:lambda:{region}:{ACCT_PROD}:function:thumbnailer"
            call(2, "lambda.amazonaws.com", "GetFunction20150331v2", region, {"functionName": "thumbnailer"}, None,
                 cmd="lambda.get-function", read_only=True)
            call(2, "lambda.amazonaws.com", "UpdateFunctionCode20150331v2", region,
                 {"functionName": "thumbnailer", "s3Bucket": ARTIFACT_BUCKET, "s3Key": f"thumbnailer/{sha}.zip",
                  "publish": False, "dryRun": False},
                 {"functionName": "thumbnailer", "functionArn": fn_arn, "runtime": "python3.12",
                  "role": ROLE_THUMB.arn, "handler": "app.handler", "codeSha256": base64.b64encode(
                      bytes.fromhex(sha + sha[:24])).decode(), "version": "$LATEST", "state": "Active",
                  "lastUpdateStatus": "InProgress"},
                 cmd="lambda.update-function-code", read_only=False)
        if day.weekday == 3 and k == 0:  # Thursday: CDN config rollout
            etag = "E" + _alnum(rng, 13, UPPER_ALNUM)
            call(3, "cloudfront.amazonaws.com", "GetDistributionConfig2020_05_31", "us-east-1",
                 {"id": CLOUDFRONT_DIST}, None, cmd="cloudfront.get-distribution-config", read_only=True,
                 host="cloudfront.amazonaws.com")
            call(3, "cloudfront.amazonaws.com", "UpdateDistribution2020_05_31", "us-east-1",
                 {"id": CLOUDFRONT_DIST, "ifMatch": etag,
                  "distributionConfig": {"callerReference": "orders-cdn", "comment": f"orders {sha[:12]}",
                                         "enabled": True, "defaultRootObject": "index.html"}},
                 {"distribution": {"id": CLOUDFRONT_DIST, "aRN": f"arn:aws:cloudfront::{ACCT_PROD}:distribution/"
                                                                 f"{CLOUDFRONT_DIST}", "status": "InProgress"},
                  "eTag": "E" + _alnum(rng, 13, UPPER_ALNUM)},
                 cmd="cloudfront.update-distribution", read_only=False, host="cloudfront.amazonaws.com")
        if k == 0 and day.index == 18:  # the webhook stack tries to create its own role: denied twice
            doc = json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
            for _ in range(2):
                r = call(5, "iam.amazonaws.com", "CreateRole", "us-east-1",
                         {"path": "/service-role/", "roleName": ROLE_WEBHOOK.name, "assumeRolePolicyDocument": doc},
                         None, cmd="iam.create-role", read_only=False, host="iam.amazonaws.com",
                         error=("AccessDenied",
                                f"User: {ROLE_CI.session_arn(session)} is not authorized to perform: iam:CreateRole "
                                f"on resource: {ROLE_WEBHOOK.arn} because no identity-based policy allows the "
                                f"iam:CreateRole action"))
                e.mark("access_denied_create_role", r, principal=ROLE_CI.arn, eventName="CreateRole")
        if k == 0 and day.index in (20, 27):  # new webhook function (us-east-1, then eu-west-1)
            region = "us-east-1" if day.index == 20 else "eu-west-1"
            stack = "orders-webhook-prod"
            call(3, "cloudformation.amazonaws.com", "CreateStack", region,
                 {"stackName": stack, "templateURL": f"https://{ARTIFACT_BUCKET}.s3.amazonaws.com/orders-webhook/"
                                                     f"{sha}/template.yaml", "capabilities": ["CAPABILITY_IAM"],
                  "onFailure": "ROLLBACK"},
                 {"stackId": f"arn:aws:cloudformation:{region}:{ACCT_PROD}:stack/{stack}/"
                             f"{_stable_uuid(stack + region)}"},
                 cmd="cloudformation.create-stack", read_only=False)
            call(4, "lambda.amazonaws.com", "CreateFunction20150331", region,
                 {"functionName": "orders-webhook", "runtime": "python3.12", "role": ROLE_WEBHOOK.arn,
                  "handler": "app.handler", "code": {"s3Bucket": ARTIFACT_BUCKET,
                                                     "s3Key": f"orders-webhook/{sha}.zip"},
                  "timeout": 10, "memorySize": 256, "publish": True},
                 {"functionName": "orders-webhook", "functionArn": f"arn:aws:lambda:{region}:{ACCT_PROD}:function:"
                                                                    f"orders-webhook", "role": ROLE_WEBHOOK.arn,
                  "state": "Pending"},
                 cmd="lambda.create-function", read_only=False)


def _gen_alice(day: _Day) -> None:
    """alice: IAM user with access keys; CLI reads, console logins, a few denied/dry-run EC2 calls, and the
    cross-account audit runs as audit-readonly in 012345678901."""
    e = day.emitter("alice")
    rng = e.rng
    if day.weekday >= 5:
        return
    key = USER_ALICE.access_key(1 if day.index < 21 else 2)  # key rotated on 2026-08-22
    ident = _iam_user(USER_ALICE, key)
    office_ip = f"198.51.100.{rng.choice((23, 24, 57))}"

    def ua(cmd: str) -> str:
        """alice's CLI user agent for one command."""
        return UA_CLI_ALICE.format(cmd=cmd)

    if day.weekday == 0 or day.index == 2:  # console sign-in at the start of the week
        t = day.start + 7 * 3600 + rng.randrange(3600)
        login = _iam_user(USER_ALICE, None)
        url = "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB_" \
              f"us-east-1_{_hex(rng, 16)}"
        if day.index == 9:  # a failed attempt first: no errorCode, only errorMessage
            r = e.rec(login, t - 40, "signin.amazonaws.com", "ConsoleLogin", "us-east-1", office_ip, UA_BROWSER, None,
                      {"ConsoleLogin": "Failure"}, read_only=False, event_type="AwsConsoleSignIn", tls=TLS13,
                      host="signin.aws.amazon.com", add={"LoginTo": url, "MobileVersion": "No", "MFAUsed": "No"},
                      error=(None, "Failed authentication"))
            e.mark("console_login_failure", r, principal=USER_ALICE.arn, eventName="ConsoleLogin")
        e.rec(login, t, "signin.amazonaws.com", "ConsoleLogin", "us-east-1", office_ip, UA_BROWSER, None,
              {"ConsoleLogin": "Success"}, read_only=False, event_type="AwsConsoleSignIn", tls=TLS13,
              host="signin.aws.amazon.com", add={"LoginTo": url, "MobileVersion": "No", "MFAUsed": "Yes"})

    for _ in range(_scaled(rng, 2.0 * day.scale)):
        t = day.start + _time_of_day(rng, "business")
        ec2_region = "eu-west-1" if rng.random() < 0.2 else "us-east-1"
        if rng.random() < 0.5:
            t += 1
            e.rec(ident, t, "sts.amazonaws.com", "GetCallerIdentity", "us-east-1", office_ip,
                  ua("sts.get-caller-identity"), None,
                  {"userId": USER_ALICE.user_id, "account": ACCT_PROD, "arn": USER_ALICE.arn}, read_only=True,
                  host="sts.us-east-1.amazonaws.com")
        for _ in range(rng.randint(3, 8)):
            t += rng.randrange(5, 90)
            what = rng.choices(("ec2", "s3ls", "s3list", "head", "cw"), (5, 2, 3, 1, 2))[0]
            if what == "ec2":
                region = ec2_region
                r = e.rec(ident, t, "ec2.amazonaws.com", "DescribeInstances", region, office_ip,
                          ua("ec2.describe-instances"),
                          {"instancesSet": {}, "filterSet": {"items": [{"name": "tag:app", "valueSet": {
                              "items": [{"value": "orders"}]}}]}}, None, read_only=True,
                          host=f"ec2.{region}.amazonaws.com")
                if day.index == 4 and "user_agent_null" not in e.oddities:
                    r["userAgent"] = None
                    e.mark("user_agent_null", r, principal=USER_ALICE.arn, eventName="DescribeInstances")
            elif what == "s3ls":
                req = None if rng.random() < 0.5 else {"Host": "s3.us-east-1.amazonaws.com"}
                e.rec(ident, t, "s3.amazonaws.com", "ListBuckets", "us-east-1", office_ip, f"[{ua('s3.ls')}]", req,
                      None, read_only=True, request_id=_alnum(rng, 16, UPPER_ALNUM),
                      add={"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256",
                           "bytesTransferredIn": 0, "AuthenticationMethod": "AuthHeader",
                           "x-amz-id-2": base64.b64encode(rng.randbytes(56)).decode(), "bytesTransferredOut": 611},
                      host="s3.us-east-1.amazonaws.com")
            elif what == "s3list":
                e.s3(ident, t, "ListObjects", ORDERS_BUCKET, None, office_ip, f"[{ua('s3.ls')}]", read_only=True,
                     extra_req={"list-type": "2", "prefix": f"invoices/{day.date:%Y/%m}/", "delimiter": "/",
                                "encoding-type": "url"}, object_res="prefix", bytes_out=rng.randrange(2000, 90000))
            elif what == "head":
                e.s3(ident, t, "HeadBucket", ORDERS_BUCKET, None, office_ip, f"[{ua('s3api.head-bucket')}]",
                     read_only=True, object_res="prefix")
            else:
                e.rec(ident, t, "monitoring.amazonaws.com", "GetMetricData", "us-east-1", office_ip,
                      ua("cloudwatch.get-metric-data"),
                      {"metricDataQueries": [{"id": "m1", "metricStat": {"metric": {
                          "namespace": "AWS/ECS", "metricName": "CPUUtilization",
                          "dimensions": [{"name": "ServiceName", "value": "orders-api"}]},
                          "period": 300, "stat": "Average"}}],
                       "startTime": _iso(t - 3 * 3600), "endTime": _iso(t)}, None, read_only=True,
                      host="monitoring.us-east-1.amazonaws.com")
    instance = "i-0" + _hex(random.Random(f"{day.seed}:alice-instance"), 16)
    if day.index in (5, 19, 37):  # tries to terminate an instance: boundary denies it
        t = day.start + 14 * 3600 + rng.randrange(3600)
        r = e.rec(ident, t, "ec2.amazonaws.com", "TerminateInstances", "us-east-1", office_ip,
                  ua("ec2.terminate-instances"), {"instancesSet": {"items": [{"instanceId": instance}]}}, None,
                  read_only=False, host="ec2.us-east-1.amazonaws.com",
                  error=("Client.UnauthorizedOperation",
                         f"You are not authorized to perform this operation. User: {USER_ALICE.arn} is not "
                         f"authorized to perform: ec2:TerminateInstances on resource: arn:aws:ec2:us-east-1:"
                         f"{ACCT_PROD}:instance/{instance} with an explicit deny in a permissions boundary. "
                         f"Encoded authorization failure message: {_alnum(rng, 180)}"))
        e.mark("unauthorized_operation", r, principal=USER_ALICE.arn, eventName="TerminateInstances")
    if day.index == 11:
        t = day.start + 15 * 3600 + rng.randrange(3600)
        r = e.rec(ident, t, "ec2.amazonaws.com", "StopInstances", "us-east-1", office_ip, ua("ec2.stop-instances"),
                  {"instancesSet": {"items": [{"instanceId": instance}]}, "force": False}, None, read_only=False,
                  host="ec2.us-east-1.amazonaws.com",
                  error=("Client.DryRunOperation", "Request would have succeeded, but DryRun flag is set."))
        e.mark("dry_run", r, principal=USER_ALICE.arn, eventName="StopInstances")

    if rng.random() < 0.6:  # daily audit run in the org member account
        _audit_run(day, e, ident, office_ip, ua)


_AUDIT_CALLS = (
    ("config.amazonaws.com", "DescribeConfigRules", {}, "configservice.describe-config-rules"),
    ("config.amazonaws.com", "DescribeComplianceByConfigRule", {"complianceTypes": ["NON_COMPLIANT"]},
     "configservice.describe-compliance-by-config-rule"),
    ("config.amazonaws.com", "DescribeConfigurationRecorders", {}, "configservice.describe-configuration-recorders"),
    ("config.amazonaws.com", "DescribeConfigurationRecorderStatus", {},
     "configservice.describe-configuration-recorder-status"),
    ("cloudtrail.amazonaws.com", "DescribeTrails", {"includeShadowTrails": True}, "cloudtrail.describe-trails"),
    ("cloudtrail.amazonaws.com", "ListTrails", {}, "cloudtrail.list-trails"),
    ("cloudtrail.amazonaws.com", "GetTrailStatus",
     {"name": f"arn:aws:cloudtrail:us-east-1:{ACCT_PROD}:trail/org-trail"}, "cloudtrail.get-trail-status"),
    ("cloudtrail.amazonaws.com", "GetEventSelectors", {"trailName": f"arn:aws:cloudtrail:us-east-1:{ACCT_PROD}:trail/"
                                                                    f"org-trail"}, "cloudtrail.get-event-selectors"),
)
_AUDIT_IAM = (
    ("ListRoles", {}, "iam.list-roles"),
    ("ListUsers", {}, "iam.list-users"),
    ("ListPolicies", {"scope": "Local", "onlyAttached": False}, "iam.list-policies"),
    ("GetAccountPasswordPolicy", None, "iam.get-account-password-policy"),
    ("GetRole", {"roleName": "OrganizationAccountAccessRole"}, "iam.get-role"),
)


def _audit_run(day: _Day, e: _Emitter, alice: dict, ip: str, ua: Callable[[str], str]) -> None:
    """alice assumes audit-readonly in 012345678901 and reads config/cloudtrail/iam in three regions."""
    rng = e.rng
    t = day.start + _time_of_day(rng, "business")
    session = "alice-audit"
    akid = _asia(rng)
    shared = _uuid(rng)
    request_id = _uuid(rng)
    e.assume_role(alice, t, ROLE_AUDIT, session, ip, ua("sts.assume-role"), account=ACCT_PROD, akid=akid,
                  duration=3600, shared=shared, host="sts.us-east-1.amazonaws.com", tls=TLS13, request_id=request_id)
    e.assume_role({"type": "AWSAccount", "principalId": USER_ALICE.user_id, "accountId": ACCT_PROD}, t, ROLE_AUDIT,
                  session, ip, ua("sts.assume-role"), account=ACCT_AUDIT, akid=akid, duration=3600, shared=shared,
                  request_id=request_id)
    ident = _assumed(ROLE_AUDIT, session, akid, t)
    for name, req, cmd in _AUDIT_IAM:
        t += rng.randrange(1, 4)
        e.rec(ident, t, "iam.amazonaws.com", name, "us-east-1", ip, ua(cmd), req, None, read_only=True,
              account=ACCT_AUDIT, host="iam.amazonaws.com")
    for region in REGIONS:
        for source, name, req, cmd in _AUDIT_CALLS:
            if rng.random() < 0.25:
                continue
            t += rng.randrange(1, 4)
            err = None
            if name == "GetTrailStatus" and region == "us-west-2" and rng.random() < 0.3:
                err = ("TrailNotFoundException", f"Unknown trail: {req['name']} for the user: {ACCT_AUDIT}")
            e.rec(ident, t, source, name, region, ip, ua(cmd), dict(req), None, read_only=True, account=ACCT_AUDIT,
                  host=f"{source.split('.')[0]}.{region}.amazonaws.com", error=err)


def _gen_sso(day: _Day) -> None:
    """Identity Center admin (jane.doe@example.com) browsing the console; creates the webhook role on day 19."""
    e = day.emitter("sso")
    rng = e.rng
    if day.weekday >= 5 or not (day.weekday in (1, 3) or rng.random() < 0.25 or day.index == 19):
        return
    t = day.start + _time_of_day(rng, "business")
    akid = _asia(rng)
    ident = _assumed(ROLE_SSO, SSO_SESSION, akid, t - 30)
    ip = "198.51.100.77"
    for _ in range(_scaled(rng, 16.0 * min(day.scale, 3.0))):
        t += rng.randrange(3, 60)
        what = rng.choices(("ec2", "iam", "s3pol", "kms", "connect"), (6, 3, 1, 1, 1))[0]
        if what == "ec2":
            name = rng.choice(("DescribeInstances", "DescribeVpcs", "DescribeSecurityGroups"))
            req = {"maxResults": 1000, "instancesSet": {}, "filterSet": {}} if name == "DescribeInstances" else \
                {"vpcSet": {}, "filterSet": {}} if name == "DescribeVpcs" else \
                {"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}}
            e.rec(ident, t, "ec2.amazonaws.com", name, "eu-west-1", ip, "console.ec2.amazonaws.com", req, None,
                  read_only=True, console=True, tls=TLS13, host="ec2.eu-west-1.amazonaws.com")
        elif what == "iam":
            if rng.random() < 0.5:
                e.rec(ident, t, "iam.amazonaws.com", "ListRoles", "us-east-1", ip, "AWS Internal",
                      {"maxItems": 1000}, None, read_only=True, console=True, tls=None)
            else:
                e.rec(ident, t, "iam.amazonaws.com", "GetRole", "us-east-1", ip, "AWS Internal",
                      {"roleName": rng.choice((ROLE_ORDERS.name, ROLE_CI.name, ROLE_LEGACY.name))}, None,
                      read_only=True, console=True, tls=None)
        elif what == "s3pol":
            bucket = rng.choice((MEDIA_BUCKET, LEGACY_BUCKET))
            r = e.s3(ident, t, "GetBucketPolicy", bucket, None, ip, UA_S3_CONSOLE, read_only=True,
                     extra_req={"policy": ""}, object_res="none", data=False,
                     error=("NoSuchBucketPolicy", "The bucket policy does not exist"))
            r["sessionCredentialFromConsole"] = "true"
            e.mark("no_such_bucket_policy", r, principal=ROLE_SSO.arn, eventName="GetBucketPolicy")
        elif what == "kms":
            e.rec(ident, t, "kms.amazonaws.com", "ListKeys", "eu-west-1", ip, "AWS Internal", {"limit": 1000}, None,
                  read_only=True, console=True, tls=None)
        else:
            inst = f"arn:aws:connect:eu-west-1:{ACCT_PROD}:instance/{CONNECT_INSTANCE}"
            e.rec(ident, t, "connect.amazonaws.com", "GetMetricDataV2", "eu-west-1", ip, UA_BROWSER,
                  {"ResourceArn": inst, "StartTime": _iso(t - 86400), "EndTime": _iso(t),
                   "Filters": [{"FilterKey": "QUEUE", "FilterValues": [_uuid(rng)]}],
                   "Metrics": [{"Name": "AVG_HANDLE_TIME"}, {"Name": "CONTACTS_HANDLED"}]}, None, read_only=True,
                  console=True, host="connect.eu-west-1.amazonaws.com",
                  resources=[{"accountId": ACCT_PROD, "type": "AWS::Connect::Instance", "ARN": inst}])
    if day.index == 19:  # creates the role the CI was denied, then attaches the Lambda basic policy
        t += 60
        doc = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
        e.rec(ident, t, "iam.amazonaws.com", "CreateRole", "us-east-1", ip, "AWS Internal",
              {"path": "/service-role/", "roleName": ROLE_WEBHOOK.name, "assumeRolePolicyDocument": doc},
              {"role": {"path": "/service-role/", "roleName": ROLE_WEBHOOK.name, "roleId": ROLE_WEBHOOK.role_id,
                        "arn": ROLE_WEBHOOK.arn, "createDate": _sts_expiration(t)}},
              read_only=False, console=True, tls=None)
        e.rec(ident, t + 20, "iam.amazonaws.com", "AttachRolePolicy", "us-east-1", ip, "AWS Internal",
              {"roleName": ROLE_WEBHOOK.name,
               "policyArn": "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"}, None,
              read_only=False, console=True, tls=None)


def _gen_legacy(day: _Day) -> None:
    """legacy-batch: an EC2 instance profile role used 4 times in 45 days."""
    plan = {2: ("list",), 16: ("sqs", "sqs"), 39: ("list",)}
    if day.index not in plan:
        return
    e = day.emitter("legacy")
    rng = e.rng
    instance = "i-0a1b2c3d4e5f67890"
    t = day.start + 2 * 3600 + rng.randrange(3600)
    akid = _asia(rng)
    e.assume_role(_service("ec2.amazonaws.com"), t - 120, ROLE_LEGACY, instance, "ec2.amazonaws.com",
                  "ec2.amazonaws.com", account=ACCT_PROD, akid=akid, duration=21600)
    ident = _assumed(ROLE_LEGACY, instance, akid, t - 120, ec2_delivery=True)
    ua = "aws-sdk-java/1.11.1030 Linux/4.14.336-253.554.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/25.402-b08 java/1.8.0_402"
    for what in plan[day.index]:
        t += rng.randrange(5, 60)
        if what == "list":
            e.s3(ident, t, "ListObjects", LEGACY_BUCKET, None, "10.0.3.17", f"[{ua}]", read_only=True,
                 extra_req={"prefix": "batch/", "encoding-type": "url"}, object_res="prefix", bytes_out=5210)
        else:
            e.rec(ident, t, "sqs.amazonaws.com", "GetQueueAttributes", "us-east-1", "10.0.3.17", ua,
                  {"queueUrl": f"https://sqs.us-east-1.amazonaws.com/{ACCT_PROD}/legacy-batch-jobs",
                   "attributeNames": ["ApproximateNumberOfMessages"]}, None, read_only=True, tls=TLS12,
                  host="sqs.us-east-1.amazonaws.com")


def _gen_services(day: _Day) -> None:
    """AWS service principals writing to log buckets: CloudTrail (GetBucketAcl/PutObject) and VPC flow logs."""
    e = day.emitter("services")
    rng = e.rng
    xpool = [base64.b64encode(rng.randbytes(56)).decode() for _ in range(3)]
    trail_arn = f"arn:aws:cloudtrail:us-east-1:{ACCT_PROD}:trail/{TRAIL_NAME}"
    # deliveries follow the busy periods of the day (a few minutes after a burst of traffic)
    for busy in sorted(day.busy) or [day.start + 12 * 3600]:
        if rng.random() < 0.7:  # the trail's own deliveries (data events on its bucket)
            t = busy + rng.randrange(60, 240)
            region = rng.choice(REGIONS)
            svc = _service("cloudtrail.amazonaws.com")
            e.s3(svc, t, "GetBucketAcl", TRAIL_BUCKET, None, "cloudtrail.amazonaws.com", "cloudtrail.amazonaws.com",
                 read_only=True, extra_req={"acl": ""}, object_res="none", data=False, tls=None, x_amz_pool=xpool,
                 bytes_out=574, shared=_uuid(rng))
            stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime(t - t % 300))
            key = (f"AWSLogs/{ACCT_PROD}/CloudTrail/{region}/{day.date:%Y/%m/%d}/{ACCT_PROD}_CloudTrail_{region}_"
                   f"{stamp}_{_alnum(rng, 16)}.json.gz")
            r = e.s3(svc, t + 1, "PutObject", TRAIL_BUCKET, key, "cloudtrail.amazonaws.com",
                     "cloudtrail.amazonaws.com", read_only=False, tls=None, x_amz_pool=xpool,
                     extra_req={"x-amz-acl": "bucket-owner-full-control", "x-amz-server-side-encryption": "aws:kms",
                                "x-amz-server-side-encryption-aws-kms-key-id": _kms_arn("us-east-1", TRAIL_KEY_ID)},
                     bytes_in=float(rng.randrange(900, 40000)), bytes_out=0.0, shared=_uuid(rng))
            r["additionalEventData"]["SSEApplied"] = "SSE_KMS"
            r["requestParameters"]["x-amz-server-side-encryption-context"] = HIDDEN
            e.rec(svc, t, "kms.amazonaws.com", "GenerateDataKey", "us-east-1", "cloudtrail.amazonaws.com",
                  "cloudtrail.amazonaws.com",
                  {"keyId": _kms_arn("us-east-1", TRAIL_KEY_ID),
                   "encryptionContext": {"aws:cloudtrail:arn": trail_arn,
                                         "aws:s3:arn": f"arn:aws:s3:::{TRAIL_BUCKET}/{key}"},
                   "keySpec": "AES_256"}, None, read_only=True, tls=None, shared=_uuid(rng),
                  resources=[{"accountId": ACCT_PROD, "type": "AWS::KMS::Key",
                              "ARN": _kms_arn("us-east-1", TRAIL_KEY_ID)}])
        if rng.random() < 0.4:  # VPC flow log deliveries
            t = busy + rng.randrange(30, 200)
            svc = _service("delivery.logs.amazonaws.com")
            e.s3(svc, t, "GetBucketAcl", FLOWLOG_BUCKET, None, "delivery.logs.amazonaws.com",
                 "delivery.logs.amazonaws.com", read_only=True, extra_req={"acl": ""}, object_res="none", data=False,
                 tls=None, x_amz_pool=xpool, bytes_out=553, shared=_uuid(rng))
            stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime(t - t % 300))
            key = (f"AWSLogs/{ACCT_PROD}/vpcflowlogs/us-east-1/{day.date:%Y/%m/%d}/{ACCT_PROD}_vpcflowlogs_us-east-1_"
                   f"fl-0a1b2c3d4e5f60718_{stamp}_{_hex(rng, 8)}.log.gz")
            e.s3(svc, t + 1, "PutObject", FLOWLOG_BUCKET, key, "delivery.logs.amazonaws.com",
                 "delivery.logs.amazonaws.com", read_only=False, tls=None, x_amz_pool=xpool,
                 extra_req={"x-amz-acl": "bucket-owner-full-control"},
                 bytes_in=float(rng.randrange(2000, 90000)), bytes_out=0.0, shared=_uuid(rng))


#: (topic, generator) in generation order; order matters only for the order of same-second records
PRINCIPAL_GENERATORS: tuple[tuple[str, Callable[[_Day], None]], ...] = (
    ("orders-api", _gen_orders_api),
    ("thumbnailer", _gen_thumbnailer),
    ("ci", _gen_ci),
    ("alice", _gen_alice),
    ("sso", _gen_sso),
    ("legacy", _gen_legacy),
    ("services", _gen_services),
)


def _day_entries(seed: int, index: int, scale: float, oddities: dict) -> list[tuple[str, str, int, dict]]:
    """All records of one day as ``(account, log_region, epoch, record)``, sorted by time (stable)."""
    day = _Day(seed=seed, index=index, start=START_EPOCH + index * DAY, scale=scale, oddities=oddities)
    for _, gen in PRINCIPAL_GENERATORS:
        gen(day)
    day.entries.sort(key=lambda x: x[2])
    return day.entries


def iter_records(seed: int = DEFAULT_SEED, days: int = DEFAULT_DAYS, scale: float = 1.0) -> Iterator[dict]:
    """Yield every distinct record (no delivery duplicates), day by day, in eventTime order within a day.

    Memory stays bounded by one day of records, so this is suitable for millions of records.
    """
    oddities: dict = {}
    for index in range(days):
        for _, _, _, rec in _day_entries(seed, index, scale, oddities):
            yield rec


# --------------------------------------------------------------------------------------------------------------
# Delivery: batching into files, duplicates, the corrupt file
# --------------------------------------------------------------------------------------------------------------


@dataclass
class LogFile:
    """One delivered log file (before serialisation)."""

    path: str  # relative to the output dir
    account: str
    region: str
    stamp: int  # epoch of the delivery time in the name
    records: list[dict]
    corrupt: bool = False  # write truncated gzip bytes


#: delivery batch lengths in seconds (CloudTrail delivers about every 5 minutes, less often when quiet)
_WINDOWS = (300, 600, 900, 900)


class _Stream:
    """Delivery batches of one (account tree, region): windows of 5/10/15 minutes on a 5-minute grid."""

    def __init__(self, seed: int, account: str, region: str):
        self.account, self.region = account, region
        self._wrng = random.Random(f"{seed}:windows:{account}:{region}")
        self._nrng = random.Random(f"{seed}:names:{account}:{region}")
        self.win_end = START_EPOCH + self._wrng.choice(_WINDOWS)
        self.pending: list[dict] = []

    def add(self, t: int, rec: dict, out: list[LogFile]) -> None:
        """Add a record delivered at time ``t`` (non-decreasing per stream); closed batches go to ``out``."""
        if t >= self.win_end:
            self.flush(out)
            while t >= self.win_end:
                self.win_end += self._wrng.choice(_WINDOWS)
        self.pending.append(rec)

    def flush(self, out: list[LogFile]) -> None:
        """Close the current batch into a file (if it holds anything)."""
        if not self.pending:
            return
        stamp = self.win_end
        out.append(LogFile(self.path_for(stamp), self.account, self.region, stamp, self.pending))
        self.pending = []

    def path_for(self, stamp: int) -> str:
        """A real-looking object key for a file delivered at ``stamp``."""
        g = time.gmtime(stamp)
        name = (f"{self.account}_CloudTrail_{self.region}_{time.strftime('%Y%m%dT%H%MZ', g)}_"
                f"{_alnum(self._nrng, 16)}.json.gz")
        return f"{TREES[self.account]}/CloudTrail/{self.region}/{time.strftime('%Y/%m/%d', g)}/{name}"


def iter_log_files(seed: int = DEFAULT_SEED, days: int = DEFAULT_DAYS, scale: float = 1.0, *,
                   dup_rate: float = 0.01, oddities: dict | None = None,
                   corrupt_date: dt.date | None = dt.date(2026, 8, 20)) -> Iterator[LogFile]:
    """Yield delivered log files in delivery order.

    About ``dup_rate`` of the records are delivered a second time (same bytes, same eventID): half in a later
    batch of the same account/region on the same day, half under another region's prefix at the same time.
    If ``corrupt_date`` is inside the range, the first us-east-1 file of account 111122223333 delivered at or
    after 12:00 that day is followed by a truncated re-delivery of the same batch (``LogFile.corrupt``).
    ``oddities`` (a dict) receives the ids of the deliberately odd records.
    """
    oddities = {} if oddities is None else oddities
    streams: dict[tuple[str, str], _Stream] = {}
    out: list[LogFile] = []
    corrupt_done = corrupt_date is None
    corrupt_after = None if corrupt_date is None else calendar.timegm(corrupt_date.timetuple()) + 12 * 3600

    def stream(account: str, region: str) -> _Stream:
        """The delivery stream of (account, region), created on first use."""
        key = (account, region)
        if key not in streams:
            streams[key] = _Stream(seed, account, region)
        return streams[key]

    for index in range(days):
        entries = _day_entries(seed, index, scale, oddities)
        day_end = START_EPOCH + (index + 1) * DAY
        drng = random.Random(f"{seed}:dups:{index}")
        deliveries: list[tuple[int, int, str, str, dict]] = []
        for seq, (account, region, t, rec) in enumerate(entries):
            deliveries.append((t, seq, account, region, rec))
            if drng.random() < dup_rate:
                shift = drng.randrange(600, 2400)
                others = [r for r in REGIONS if r != region]
                if drng.random() < 0.5 and t + shift < day_end:
                    deliveries.append((t + shift, seq, account, region, rec))
                else:
                    deliveries.append((t, seq, account, drng.choice(others), rec))
        deliveries.sort(key=lambda d: (d[0], d[1]))
        for t, _, account, region, rec in deliveries:
            stream(account, region).add(t, rec, out)
        for f in out:
            yield f
            if not corrupt_done and f.account == ACCT_PROD and f.region == "us-east-1" and \
                    f.stamp >= corrupt_after:
                corrupt_done = True
                yield LogFile(stream(ACCT_PROD, "us-east-1").path_for(f.stamp), ACCT_PROD, "us-east-1", f.stamp,
                              f.records, corrupt=True)
        out.clear()
    for key in sorted(streams):
        streams[key].flush(out)
    yield from out


# --------------------------------------------------------------------------------------------------------------
# Digest, Insight, IAM snapshots
# --------------------------------------------------------------------------------------------------------------


def _digest(files: list[tuple[str, str, str, str]], start: int, end: int, rng: random.Random) -> tuple[str, dict]:
    """A CloudTrail digest for account 111122223333 us-east-1 covering ``[start, end)``.

    ``files`` are ``(path, sha256 hex of the gzip bytes, oldest eventTime, newest eventTime)``.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(end))
    folder = time.strftime("%Y/%m/%d", time.gmtime(end))
    path = (f"AWSLogs/{ACCT_PROD}/CloudTrail-Digest/us-east-1/{folder}/{ACCT_PROD}_CloudTrail-Digest_us-east-1_"
            f"{TRAIL_NAME}_us-east-1_{stamp}.json.gz")
    prev_stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
    prev_folder = time.strftime("%Y/%m/%d", time.gmtime(start))
    newest = max((f[3] for f in files), default=None)
    oldest = min((f[2] for f in files), default=None)
    doc: dict[str, Any] = {
        "awsAccountId": ACCT_PROD,
        "digestStartTime": _iso(start),
        "digestEndTime": _iso(end),
        "digestS3Bucket": TRAIL_BUCKET,
        "digestS3Object": path,
        "digestPublicKeyFingerprint": _hex(rng, 32),
        "digestSignatureAlgorithm": "SHA256withRSA",
        "newestEventTime": newest,
        "oldestEventTime": oldest,
        "previousDigestS3Bucket": TRAIL_BUCKET,
        "previousDigestS3Object": (f"AWSLogs/{ACCT_PROD}/CloudTrail-Digest/us-east-1/{prev_folder}/{ACCT_PROD}_"
                                   f"CloudTrail-Digest_us-east-1_{TRAIL_NAME}_us-east-1_{prev_stamp}.json.gz"),
        "previousDigestHashValue": _hex(rng, 64),
        "previousDigestHashAlgorithm": "SHA-256",
        "previousDigestSignature": _hex(rng, 512),
        "logFiles": [{"s3Bucket": TRAIL_BUCKET, "s3Object": p, "hashValue": h, "hashAlgorithm": "SHA-256",
                      "newestEventTime": n, "oldestEventTime": o} for p, h, o, n in files],
    }
    return path, doc


def _insight(rng: random.Random) -> tuple[str, dict]:
    """An Insight file (Start and End events) on 2026-08-10 for a CreateLogStream call-rate spike."""
    t_start = calendar.timegm((2026, 8, 10, 14, 20, 0, 0, 0, 0))
    t_end = t_start + 15 * 60
    stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime(t_end + 300))
    path = (f"AWSLogs/{ACCT_PROD}/CloudTrail-Insight/us-east-1/2026/08/10/{ACCT_PROD}_CloudTrail-Insight_us-east-1_"
            f"{stamp}_{_alnum(rng, 16)}.json.gz")
    shared = _uuid(rng)
    attributions = [
        {"attribute": "userIdentityArn",
         "insight": [{"value": ROLE_ORDERS.session_arn("a3f1c2d4e5b60718293a4b5c6d7e8f90"), "average": 4.2}],
         "baseline": [{"value": ROLE_ORDERS.session_arn("a3f1c2d4e5b60718293a4b5c6d7e8f90"),
                       "average": 8.82145e-05}]},
        {"attribute": "userAgent", "insight": [{"value": UA_BOTO_APP, "average": 4.2}],
         "baseline": [{"value": UA_BOTO_APP, "average": 8.82145e-05}]},
        {"attribute": "errorCode", "insight": [{"value": "null", "average": 4.2}],
         "baseline": [{"value": "null", "average": 8.82145e-05}]},
    ]

    def event(state: str, t: int, with_stats: bool) -> dict:
        """One Insight record (Start or End)."""
        details: dict[str, Any] = {"state": state, "eventSource": "logs.amazonaws.com",
                                   "eventName": "CreateLogStream", "insightType": "ApiCallRateInsight"}
        ctx: dict[str, Any] = {"statistics": {"baseline": {"average": 8.82145e-05},
                                              "insight": {"average": 4.2}}}
        if with_stats:
            ctx["statistics"]["insightDuration"] = 15
            ctx["statistics"]["baselineDuration"] = 12960
        ctx["attributions"] = attributions
        details["insightContext"] = ctx
        return {"eventVersion": "1.08", "eventTime": _iso(t), "awsRegion": "us-east-1", "eventID": _uuid(rng),
                "eventType": "AwsCloudTrailInsight", "recipientAccountId": ACCT_PROD, "sharedEventID": shared,
                "insightDetails": details, "eventCategory": "Insight"}

    return path, {"Records": [event("Start", t_start, False), event("End", t_end, True)]}


def _doc(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _allow(action: Any, resource: Any = "*", sid: str | None = None, **extra: Any) -> dict:
    s: dict[str, Any] = {}
    if sid:
        s["Sid"] = sid
    s["Effect"] = "Allow"
    s["Action"] = action
    s["Resource"] = resource
    s.update(extra)
    return s


def _trust(principal: dict, **extra: Any) -> dict:
    return _doc({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole", **extra})


_AWS_MANAGED = {
    "AdministratorAccess": ("/", _doc(_allow("*", "*")), "v1"),
    "ReadOnlyAccess": ("/", _doc(_allow(sorted([
        "cloudformation:Describe*", "cloudformation:Get*", "cloudformation:List*", "cloudtrail:Describe*",
        "cloudtrail:Get*", "cloudtrail:List*", "cloudtrail:LookupEvents", "cloudwatch:Describe*", "cloudwatch:Get*",
        "cloudwatch:List*", "config:Deliver*", "config:Describe*", "config:Get*", "config:List*",
        "dynamodb:BatchGet*", "dynamodb:Describe*", "dynamodb:Get*", "dynamodb:List*", "dynamodb:Query",
        "dynamodb:Scan", "ec2:Describe*", "ec2:Get*", "ecr:BatchGet*", "ecr:Describe*", "ecr:Get*", "ecr:List*",
        "ecs:Describe*", "ecs:List*", "iam:Generate*", "iam:Get*", "iam:List*", "iam:Simulate*", "kms:Describe*",
        "kms:Get*", "kms:List*", "lambda:Get*", "lambda:List*", "logs:Describe*", "logs:FilterLogEvents",
        "logs:Get*", "logs:StartQuery", "s3:Describe*", "s3:Get*", "s3:List*", "secretsmanager:Describe*",
        "secretsmanager:List*", "sqs:Get*", "sqs:List*", "sqs:Receive*", "sts:GetCallerIdentity"]), "*",
        sid="ReadOnlyActions")), "v121"),
    "AmazonS3ReadOnlyAccess": ("/", _doc(_allow(["s3:Get*", "s3:List*", "s3:Describe*", "s3-object-lambda:Get*",
                                                 "s3-object-lambda:List*"], "*")), "v3"),
    "AmazonS3FullAccess": ("/", _doc(_allow(["s3:*", "s3-object-lambda:*"], "*")), "v2"),
    "AWSLambdaBasicExecutionRole": ("/service-role/", _doc(_allow(
        ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "*")), "v1"),
    "AmazonECSTaskExecutionRolePolicy": ("/service-role/", _doc(_allow(
        ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
         "ecr:BatchGetImage", "logs:CreateLogStream", "logs:PutLogEvents"], "*")), "v1"),
}


#: The organization's management account (no logs of its own in the sample).
ACCT_MANAGEMENT = "999988887777"


def _organizations_snapshot() -> dict:
    """``iam/organizations.json``: the SCPs and RCPs of the organization (the format of docs/organizations.md).

    Prod (111122223333) sits in Workloads/Prod, whose ``ProtectProdData`` SCP denies destructive S3, DynamoDB, KMS
    and CloudTrail actions: part of what orders-api-task (``s3:*``, ``dynamodb:*``) and legacy-batch
    (AdministratorAccess) are granted. The audit account (012345678901) sits in Security, whose allow-list SCP
    ``SecurityAuditOnly`` replaces FullAWSAccess. The root's ``RegionGuard`` SCP and ``DataPerimeter`` RCP deny
    only under Conditions, so they block nothing for certain.
    """
    root, workloads, prod, tooling, security = ("r-a1b2", "ou-a1b2-workload", "ou-a1b2-prod0001",
                                                "ou-a1b2-tooling1", "ou-a1b2-security")

    def pol(pid: str, name: str, ptype: str, doc: dict, targets: list[str], managed: bool = False) -> dict:
        return {"PolicySummary": {"Id": pid, "Name": name, "Type": ptype, "AwsManaged": managed},
                "Content": json.dumps(doc, separators=(",", ":")), "Targets": targets}

    scp, rcp = "SERVICE_CONTROL_POLICY", "RESOURCE_CONTROL_POLICY"
    regions = ["us-east-1", "eu-west-1", "us-west-2"]
    return {
        "Organization": {"Id": ORG_ID, "MasterAccountId": ACCT_MANAGEMENT},
        "Roots": [{"Id": root, "Name": "Root"}],
        "OrganizationalUnits": [
            {"Id": workloads, "Name": "Workloads", "ParentId": root},
            {"Id": prod, "Name": "Prod", "ParentId": workloads},
            {"Id": tooling, "Name": "Tooling", "ParentId": root},
            {"Id": security, "Name": "Security", "ParentId": root},
        ],
        "Accounts": [
            {"Id": ACCT_MANAGEMENT, "Name": "management", "ParentId": root},
            {"Id": ACCT_PROD, "Name": "prod", "ParentId": prod},
            {"Id": ACCT_CI, "Name": "ci-tooling", "ParentId": tooling},
            {"Id": ACCT_AUDIT, "Name": "audit", "ParentId": security},
        ],
        "Policies": [
            pol("p-FullAWSAccess", "FullAWSAccess", scp, _doc(_allow("*", "*")),
                [root, workloads, prod, tooling, ACCT_MANAGEMENT, ACCT_PROD, ACCT_CI, ACCT_AUDIT], managed=True),
            pol("p-regionguard1", "RegionGuard", scp, _doc(
                {"Sid": "DenyOutsideOurRegions", "Effect": "Deny",
                 "NotAction": ["iam:*", "organizations:*", "sts:*", "cloudfront:*", "route53:*", "support:*",
                               "budgets:*", "health:*", "account:*"], "Resource": "*",
                 "Condition": {"StringNotEquals": {"aws:RequestedRegion": regions}}}), [root]),
            pol("p-protectprod1", "ProtectProdData", scp, _doc(
                {"Sid": "NoDataDestruction", "Effect": "Deny", "Action": [
                    "s3:DeleteBucket", "s3:DeleteBucketPolicy", "s3:PutBucketPolicy", "s3:PutBucketAcl",
                    "s3:PutBucketPublicAccessBlock", "s3:PutAccountPublicAccessBlock", "s3:PutLifecycleConfiguration",
                    "s3:PutBucketObjectLockConfiguration", "dynamodb:DeleteTable", "dynamodb:DeleteBackup",
                    "dynamodb:UpdateContinuousBackups", "kms:ScheduleKeyDeletion", "kms:DisableKey",
                    "kms:PutKeyPolicy"], "Resource": "*"},
                {"Sid": "KeepTheTrail", "Effect": "Deny", "Action": [
                    "cloudtrail:StopLogging", "cloudtrail:DeleteTrail", "cloudtrail:UpdateTrail",
                    "organizations:LeaveOrganization"], "Resource": "*"}), [prod]),
            pol("p-securityro1", "SecurityAuditOnly", scp, _doc(_allow(
                ["config:Describe*", "config:Get*", "config:List*", "cloudtrail:Describe*", "cloudtrail:Get*",
                 "cloudtrail:List*", "cloudtrail:LookupEvents", "iam:Get*", "iam:List*", "iam:Generate*",
                 "access-analyzer:Get*", "access-analyzer:List*", "sts:GetCallerIdentity"], "*",
                sid="AuditReadsOnly")), [security]),
            pol("p-RCPFullAWSAccess", "RCPFullAWSAccess", rcp,
                _doc({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}),
                [root, workloads, prod, tooling, security, ACCT_MANAGEMENT, ACCT_PROD, ACCT_CI, ACCT_AUDIT],
                managed=True),
            pol("p-perimeter01", "DataPerimeter", rcp, _doc(
                {"Sid": "OnlyOurOrganization", "Effect": "Deny", "Principal": "*",
                 "Action": ["s3:*", "sqs:*", "kms:*", "secretsmanager:*", "sts:AssumeRole"], "Resource": "*",
                 "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": ORG_ID},
                               "BoolIfExists": {"aws:PrincipalIsAWSService": "false"}}}), [root]),
        ],
    }


def _aws_policy_arn(name: str) -> str:
    return f"arn:aws:iam::aws:policy{_AWS_MANAGED[name][0]}{name}"


def _iam_snapshots(last_used: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """``get-account-authorization-details`` output for the three accounts.

    ``last_used`` maps a role ARN to (eventTime, region) of its last logged use, for ``RoleLastUsed``.
    """
    created = calendar.timegm((2024, 3, 11, 9, 12, 45, 0, 0, 0))

    def cd(offset_days: int) -> str:
        """A creation date some days after 2024-03-11 (fixed)."""
        return _cli_date(created + offset_days * DAY + offset_days * 977)

    def role(r: Role, trust: dict, *, days: int, inline: list | None = None, attached: list[str] | None = None,
             boundary: str | None = None, profiles: list | None = None, tags: list | None = None,
             description: str | None = None) -> dict:
        """One RoleDetailList entry."""
        d: dict[str, Any] = {"Path": r.path, "RoleName": r.name, "RoleId": r.role_id, "Arn": r.arn,
                             "CreateDate": cd(days), "AssumeRolePolicyDocument": trust}
        if description:
            d["Description"] = description
        d["InstanceProfileList"] = profiles or []
        d["RolePolicyList"] = [{"PolicyName": n, "PolicyDocument": doc} for n, doc in (inline or [])]
        d["AttachedManagedPolicies"] = [{"PolicyName": a.rsplit("/", 1)[1], "PolicyArn": a} for a in (attached or [])]
        if boundary:
            d["PermissionsBoundary"] = {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": boundary}
        d["Tags"] = tags or []
        lu = last_used.get(r.arn)
        d["RoleLastUsed"] = {"LastUsedDate": lu[0].replace("Z", "+00:00"), "Region": lu[1]} if lu else {}
        return d

    def managed(name: str, arn: str, path: str, versions: list[tuple[str, dict]], attachments: int, days: int,
                boundary_uses: int = 0, description: str | None = None) -> dict:
        """One Policies entry with its version list (the last version is the default)."""
        d: dict[str, Any] = {"PolicyName": name, "PolicyId": _stable_id("ANPA", arn), "Arn": arn, "Path": path,
                             "DefaultVersionId": versions[-1][0], "AttachmentCount": attachments,
                             "PermissionsBoundaryUsageCount": boundary_uses, "IsAttachable": True,
                             "CreateDate": cd(days), "UpdateDate": cd(days + 30 * (len(versions) - 1))}
        if description:
            d["Description"] = description
        d["PolicyVersionList"] = [
            {"Document": doc, "VersionId": vid, "IsDefaultVersion": i == len(versions) - 1,
             "CreateDate": cd(days + 30 * i)} for i, (vid, doc) in enumerate(versions)]
        return d

    def aws_managed(name: str, attachments: int) -> dict:
        """A Policies entry for an attached AWS managed policy."""
        path, doc, vid = _AWS_MANAGED[name]
        return managed(name, _aws_policy_arn(name), path, [(vid, doc)], attachments, -900)

    p = f"arn:aws:iam::{ACCT_PROD}:policy"
    table = f"arn:aws:dynamodb:*:{ACCT_PROD}:table/orders"
    orders_v1 = _doc(_allow(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"], table))
    orders_v2 = _doc(
        _allow("dynamodb:*", [table, f"{table}/index/*"], sid="OrdersTable"),
        _allow("dynamodb:PutItem", f"{table}-audit-*", sid="AuditTables"),
        _allow(["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
               f"arn:aws:sqs:*:{ACCT_PROD}:orders-events", sid="OrdersQueue"),
        _allow(["kms:GenerateDataKey", "kms:ReEncrypt*", "kms:DescribeKey"],
               [f"arn:aws:kms:*:{ACCT_PROD}:key/{ORDERS_KEY_ID}", _kms_arn("us-east-1", OLD_KEY_ID)],
               sid="OrdersKey"),
        _allow("secretsmanager:GetSecretValue",
               f"arn:aws:secretsmanager:*:{ACCT_PROD}:secret:orders/db-credentials-*", sid="DbSecret"),
        _allow(["logs:CreateLogStream", "logs:PutLogEvents"],
               f"arn:aws:logs:*:{ACCT_PROD}:log-group:/app/orders-api:*", sid="AppLogs"),
    )
    ci_policy = _doc(
        _allow("cloudformation:*", "*", sid="Stacks"),
        _allow("iam:PassRole", "*", sid="PassAnyRole"),
        _allow(["lambda:GetFunction", "lambda:UpdateFunctionCode", "lambda:CreateFunction",
                "lambda:UpdateFunctionConfiguration", "lambda:PublishVersion"],
               f"arn:aws:lambda:*:{ACCT_PROD}:function:*", sid="Functions"),
        _allow(["ecs:RegisterTaskDefinition", "ecs:DescribeTaskDefinition", "ecs:UpdateService",
                "ecs:DescribeServices"], "*", sid="Ecs"),
        _allow(["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:PutImage",
                "ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload"], "*", sid="Ecr"),
        _allow(["s3:PutObject", "s3:GetObject", "s3:ListBucket"],
               [f"arn:aws:s3:::{ARTIFACT_BUCKET}", f"arn:aws:s3:::{ARTIFACT_BUCKET}/*"], sid="Artifacts"),
        _allow(["cloudfront:GetDistributionConfig", "cloudfront:UpdateDistribution",
                "cloudfront:CreateInvalidation"], f"arn:aws:cloudfront::{ACCT_PROD}:distribution/{CLOUDFRONT_DIST}",
               sid="Cdn"),
    )
    boundary = _doc(
        {"Sid": "AllowAllButIdentityAdmin", "Effect": "Allow",
         "NotAction": ["iam:*", "organizations:*", "account:*"], "Resource": "*"},
        _allow(["iam:GetUser", "iam:ChangePassword", "iam:ListAccessKeys"], f"arn:aws:iam::{ACCT_PROD}:user/"
                                                                           "${aws:username}", sid="SelfService"),
        {"Sid": "NoTerminate", "Effect": "Deny", "Action": ["ec2:TerminateInstances", "s3:DeleteBucket"],
         "Resource": "*"},
    )
    prod = {
        "UserDetailList": [{
            "Path": "/", "UserName": USER_ALICE.name, "UserId": USER_ALICE.user_id, "Arn": USER_ALICE.arn,
            "CreateDate": cd(40),
            "UserPolicyList": [{"PolicyName": "alice-extras", "PolicyDocument": _doc(
                _allow(["cloudwatch:GetMetricData", "cloudwatch:ListMetrics"], "*", sid="Metrics"),
                _allow("sts:AssumeRole", ROLE_AUDIT.arn, sid="AuditCrossAccount"))}],
            "GroupList": ["developers"],
            "AttachedManagedPolicies": [],
            "PermissionsBoundary": {"PermissionsBoundaryType": "Policy",
                                    "PermissionsBoundaryArn": f"{p}/DeveloperBoundary"},
            "Tags": [{"Key": "team", "Value": "platform"}],
        }],
        "GroupDetailList": [{
            "Path": "/", "GroupName": "developers", "GroupId": _stable_id("AGPA", "developers"),
            "Arn": f"arn:aws:iam::{ACCT_PROD}:group/developers", "CreateDate": cd(10),
            "GroupPolicyList": [{"PolicyName": "developers-ec2", "PolicyDocument": _doc(_allow("ec2:*", "*"))}],
            "AttachedManagedPolicies": [{"PolicyName": "AmazonS3ReadOnlyAccess",
                                         "PolicyArn": _aws_policy_arn("AmazonS3ReadOnlyAccess")}],
        }],
        "RoleDetailList": [
            role(ROLE_ORDERS, _trust({"Service": "ecs-tasks.amazonaws.com"}), days=60,
                 inline=[("orders-api-s3-and-kms", _doc(_allow("s3:*", "*", sid="LegacyS3"),
                                                        _allow("kms:Decrypt", "*", sid="DecryptAnything")))],
                 attached=[f"{p}/orders-api-task-policy"], tags=[{"Key": "app", "Value": "orders"}],
                 description="Task role of the orders API (ECS Fargate)"),
            role(ROLE_ECS_EXEC, _trust({"Service": "ecs-tasks.amazonaws.com"}), days=59,
                 attached=[_aws_policy_arn("AmazonECSTaskExecutionRolePolicy")]),
            role(ROLE_THUMB, _trust({"Service": "lambda.amazonaws.com"}), days=120,
                 inline=[("thumbnailer-s3", _doc(
                     _allow("s3:GetObject", f"arn:aws:s3:::{MEDIA_BUCKET}/incoming/*", sid="ReadIncoming"),
                     _allow("s3:PutObject", f"arn:aws:s3:::{MEDIA_BUCKET}/thumbnails/*", sid="WriteThumbnails")))],
                 attached=[_aws_policy_arn("AWSLambdaBasicExecutionRole")]),
            role(ROLE_CI, _trust({"AWS": f"arn:aws:iam::{ACCT_CI}:root"},
                                 Condition={"ArnEquals": {"aws:PrincipalArn": USER_CIBOT.arn}}), days=200,
                 attached=[f"{p}/ci-deploy-policy"], tags=[{"Key": "owner", "Value": "ci"}]),
            role(ROLE_SSO, _doc({"Effect": "Allow", "Principal": {
                "Federated": f"arn:aws:iam::{ACCT_PROD}:saml-provider/AWSSSO_0a1b2c3d4e5f6789_DO_NOT_DELETE"},
                "Action": ["sts:AssumeRoleWithSAML", "sts:TagSession"],
                "Condition": {"StringEquals": {"SAML:aud": "https://signin.aws.amazon.com/saml"}}}), days=300,
                attached=[_aws_policy_arn("AdministratorAccess")]),
            role(ROLE_LEGACY, _trust({"Service": "ec2.amazonaws.com"}), days=-400,
                 attached=[_aws_policy_arn("AdministratorAccess")],
                 profiles=[{"Path": "/", "InstanceProfileName": "legacy-batch",
                            "InstanceProfileId": _stable_id("AIPA", "legacy-batch"),
                            "Arn": f"arn:aws:iam::{ACCT_PROD}:instance-profile/legacy-batch",
                            "CreateDate": cd(-400), "Roles": []}]),
            role(ROLE_UNUSED, _trust({"Service": "glue.amazonaws.com"}), days=250,
                 inline=[("etl-everything", _doc(_allow("glue:*", "*"), _allow("s3:*", "*")))]),
            role(ROLE_WEBHOOK, _trust({"Service": "lambda.amazonaws.com"}), days=0,
                 attached=[_aws_policy_arn("AWSLambdaBasicExecutionRole")]),
        ],
        "Policies": [
            managed("orders-api-task-policy", f"{p}/orders-api-task-policy", "/", [("v1", orders_v1),
                                                                                  ("v2", orders_v2)], 1, 60),
            managed("ci-deploy-policy", f"{p}/ci-deploy-policy", "/", [("v3", ci_policy)], 1, 200),
            managed("DeveloperBoundary", f"{p}/DeveloperBoundary", "/", [("v1", boundary)], 0, 30, boundary_uses=1,
                    description="Permissions boundary for human IAM users"),
            aws_managed("AdministratorAccess", 2),
            aws_managed("AmazonS3ReadOnlyAccess", 1),
            aws_managed("AWSLambdaBasicExecutionRole", 2),
            aws_managed("AmazonECSTaskExecutionRolePolicy", 1),
        ],
    }
    # the webhook role was created during the window (2026-08-20, by the SSO admin)
    webhook = prod["RoleDetailList"][-1]
    webhook["CreateDate"] = _cli_date(START_EPOCH + 19 * DAY + 15 * 3600)
    for r in prod["RoleDetailList"]:
        for ip in r["InstanceProfileList"]:
            ip["Roles"] = [{k: r[k] for k in ("Path", "RoleName", "RoleId", "Arn", "CreateDate",
                                               "AssumeRolePolicyDocument")}]
    audit = {
        "UserDetailList": [],
        "GroupDetailList": [],
        "RoleDetailList": [
            role(ROLE_AUDIT, _trust({"AWS": f"arn:aws:iam::{ACCT_PROD}:root"}), days=90,
                 attached=[_aws_policy_arn("ReadOnlyAccess")], description="Cross-account read-only audit"),
            role(ROLE_ORG_ADMIN, _trust({"AWS": f"arn:aws:iam::{ACCT_PROD}:root"}), days=5,
                 attached=[_aws_policy_arn("AdministratorAccess")]),
        ],
        "Policies": [aws_managed("AdministratorAccess", 1), aws_managed("ReadOnlyAccess", 1)],
    }
    ci = {
        "UserDetailList": [{
            "Path": "/", "UserName": USER_CIBOT.name, "UserId": USER_CIBOT.user_id, "Arn": USER_CIBOT.arn,
            "CreateDate": cd(150),
            "UserPolicyList": [{"PolicyName": "assume-deploy-roles", "PolicyDocument": _doc(
                _allow("sts:AssumeRole", [ROLE_CI.arn, f"arn:aws:iam::{ACCT_AUDIT}:role/ci-deploy"]))}],
            "GroupList": [],
            "AttachedManagedPolicies": [],
            "Tags": [],
        }],
        "GroupDetailList": [],
        "RoleDetailList": [],
        "Policies": [],
    }
    return {ACCT_PROD: prod, ACCT_AUDIT: audit, ACCT_CI: ci}


# --------------------------------------------------------------------------------------------------------------
# Top level
# --------------------------------------------------------------------------------------------------------------


def principal_key(rec: dict) -> str | None:
    """The principal a record is attributed to, as ``miner.models`` defines ``principal_arn``.

    AssumedRole -> ``sessionIssuer.arn`` (path kept); IAMUser -> ``arn``; AWSService -> ``invokedBy``;
    AWSAccount -> ``"AWSAccount:<accountId>"``.
    """
    ui = rec.get("userIdentity") or {}
    typ = ui.get("type")
    if typ == "AssumedRole":
        return ((ui.get("sessionContext") or {}).get("sessionIssuer") or {}).get("arn")
    if typ == "IAMUser":
        return ui.get("arn")
    if typ == "AWSService":
        return ui.get("invokedBy")
    if typ == "AWSAccount":
        return f"AWSAccount:{ui.get('accountId')}"
    return None


def generate(out_dir: str, seed: int = DEFAULT_SEED, days: int = DEFAULT_DAYS, scale: float = 1.0, *,
             sample_extras: bool = True, compresslevel: int = 9, dup_rate: float = 0.01,
             progress: bool = False) -> dict:
    """Write the log tree (and, with ``sample_extras``, digest/insight/IAM snapshots/README/EXPECTED) to
    ``out_dir`` and return the EXPECTED statistics.

    Args:
        out_dir: output directory; its ``AWSLogs/`` and ``iam/`` subtrees are replaced.
        seed: the seed; same arguments give byte-identical output.
        days: number of days from 2026-08-01.
        scale: multiplies the event volume (1.0 ~ 20k records in ~2.9 MB; 64 ~ 1M records).
        sample_extras: also write the digest, Insight file, corrupt file, IAM snapshots, README and EXPECTED.
        compresslevel: gzip level of the log files.
        dup_rate: fraction of records delivered twice.
        progress: print a line per 100 files written to stderr.
    """
    for sub in ("AWSLogs", "iam"):
        shutil.rmtree(os.path.join(out_dir, sub), ignore_errors=True)
    os.makedirs(out_dir, exist_ok=True)
    end_date = START_DATE + dt.timedelta(days=days - 1)
    corrupt_date = dt.date(2026, 8, 20) if sample_extras and START_DATE <= dt.date(2026, 8, 20) <= end_date else None
    digest_end = START_EPOCH + DAY + 3600  # hourly digest for 2026-08-02 00:00-01:00Z (the nightly task starts)
    oddities: dict = {}

    seen: set[str] = set()
    per_principal: dict[str, dict] = {}
    last_used: dict[str, tuple[str, str]] = {}
    first_delivery_path: dict[str, str] = {}
    dup_examples: dict[str, dict] = {}
    files_written = records_written = bytes_written = 0
    corrupt_path = None
    cross_midnight = 0
    digest_files: list[tuple[str, str, str, str]] = []
    folder_dates: set[str] = set()

    for lf in iter_log_files(seed, days, scale, dup_rate=dup_rate, oddities=oddities, corrupt_date=corrupt_date):
        blob = _gzip(_dumps({"Records": lf.records}), compresslevel)
        if lf.corrupt:
            blob = blob[: len(blob) * 3 // 5]
            corrupt_path = lf.path
        full = os.path.join(out_dir, lf.path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(blob)
        files_written += 1
        bytes_written += len(blob)
        if progress and files_written % 100 == 0:
            print(f"{files_written} files, {records_written} records", file=sys.stderr)
        if lf.corrupt:
            continue
        folder = lf.path.split("/CloudTrail/", 1)[1].split("/", 1)[1][:10]
        folder_dates.add(folder)
        if lf.account == ACCT_PROD and lf.region == "us-east-1" and digest_end - 3600 < lf.stamp <= digest_end:
            times = [r["eventTime"] for r in lf.records]
            digest_files.append((lf.path, hashlib.sha256(blob).hexdigest(), min(times), max(times)))
        for rec in lf.records:
            records_written += 1
            eid = rec["eventID"]
            if eid in seen:
                if sample_extras and len(dup_examples) < 2:
                    kind = "other_region" if first_delivery_path[eid].split("/CloudTrail/")[1].split("/")[0] != \
                        lf.region else "same_region_later_file"
                    if kind not in dup_examples:
                        dup_examples[kind] = {"eventID": eid, "first": first_delivery_path[eid], "second": lf.path}
                continue
            seen.add(eid)
            if sample_extras:
                first_delivery_path[eid] = lf.path
            if rec["eventTime"][:10].replace("-", "/") != folder:
                cross_midnight += 1
            key = principal_key(rec) or "unknown"
            pp = per_principal.get(key)
            if pp is None:
                pp = per_principal[key] = {"type": rec["userIdentity"]["type"], "events": 0, "by_event": Counter(),
                                           "errors": Counter()}
            pp["events"] += 1
            pp["by_event"][f"{rec['eventSource']}:{rec['eventName']}"] += 1
            if rec.get("errorCode"):
                pp["errors"][rec["errorCode"]] += 1
            if pp["type"] == "AssumedRole" and rec["eventTime"] >= last_used.get(key, ("", ""))[0]:
                last_used[key] = (rec["eventTime"], rec["awsRegion"])

    distinct = len(seen)
    stats: dict[str, Any] = {
        "generator": "scripts/gen_sample_logs.py",
        # the canonical command (the output does not depend on the directory it is written to)
        "regenerate": f"python scripts/gen_sample_logs.py --out sample_logs --seed {seed}"
                      + (f" --days {days}" if days != DEFAULT_DAYS else "")
                      + (f" --scale {scale}" if scale != 1.0 else ""),
        "seed": seed,
        "scale": scale,
        "start_date": START_DATE.isoformat(),
        "end_date": end_date.isoformat(),
        "days": days,
        "accounts": {ACCT_PROD: "prod (own trail)", ACCT_CI: "ci/tooling (own trail)",
                     ACCT_AUDIT: f"org member, org trail {ORG_ID}"},
        "regions": list(REGIONS),
        "log_files": files_written,
        "readable_log_files": files_written - (1 if corrupt_path else 0),
        "records_written": records_written,
        "distinct_event_ids": distinct,
        "duplicate_records": records_written - distinct,
        "compressed_bytes": bytes_written,
        "folder_date_min": min(folder_dates) if folder_dates else None,
        "folder_date_max": max(folder_dates) if folder_dates else None,
        "records_in_next_day_folder": cross_midnight,
    }
    if not sample_extras:
        stats["per_principal"] = {k: per_principal[k]["events"] for k in sorted(per_principal)}
        return stats

    rng = random.Random(f"{seed}:extras")
    digest_path, digest_doc = _digest(sorted(digest_files), digest_end - 3600, digest_end, rng)
    insight_path, insight_doc = _insight(rng)
    for path, doc in ((digest_path, digest_doc), (insight_path, insight_doc)):
        full = os.path.join(out_dir, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:  # stdlib json: floats written the way CloudTrail writes them
            fh.write(_gzip(json.dumps(doc, separators=(",", ":")).encode(), compresslevel))
    snaps = _iam_snapshots(last_used)
    os.makedirs(os.path.join(out_dir, "iam"), exist_ok=True)
    for acct in sorted(snaps):
        with open(os.path.join(out_dir, "iam", f"{acct}.json"), "w", encoding="utf-8") as fh:
            json.dump(snaps[acct], fh, indent=4)
            fh.write("\n")
    with open(os.path.join(out_dir, "iam", "organizations.json"), "w", encoding="utf-8") as fh:
        json.dump(_organizations_snapshot(), fh, indent=4)
        fh.write("\n")

    for name, info in oddities.items():
        eid = info["eventID"]
        if eid in first_delivery_path:
            info["file"] = first_delivery_path[eid]
    stats.update({
        "total_files": files_written + 2,  # every .json.gz under AWSLogs/: log files + digest + Insight
        "corrupt_file": corrupt_path,
        "corrupt_file_note": "truncated gzip; a re-delivery of a batch that is also delivered intact, so skipping "
                             "it loses nothing (its records are not counted in records_written)",
        "digest_file": digest_path,
        "digest_log_files": len(digest_files),
        "insight_file": insight_path,
        "insight_records": len(insight_doc["Records"]),
        "duplicate_examples": dup_examples,
        "oddity_records": {k: oddities[k] for k in sorted(oddities)},
        "principal_key_rule": "AssumedRole -> sessionContext.sessionIssuer.arn; IAMUser -> arn; "
                              "AWSService -> invokedBy; AWSAccount -> 'AWSAccount:' + accountId",
        "per_principal_events": {k: per_principal[k]["events"] for k in sorted(per_principal)},
        "per_principal": {k: {"type": v["type"], "events": v["events"],
                              "by_event": dict(sorted(v["by_event"].items())),
                              "errors": dict(sorted(v["errors"].items()))}
                          for k, v in sorted(per_principal.items())},
        "roles_without_events": sorted(
            r["Arn"] for s in snaps.values() for r in s["RoleDetailList"] if r["Arn"] not in per_principal),
        "iam_snapshots": [f"iam/{a}.json" for a in sorted(snaps)],
    })
    with open(os.path.join(out_dir, "EXPECTED.json"), "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=2)
        fh.write("\n")
    with open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(_readme(stats))
    return stats


def _readme(s: dict) -> str:
    """The human description of the sample, filled from the statistics."""
    pe = s["per_principal_events"]
    odd = s["oddity_records"]

    def o(name: str) -> str:
        """Where an oddity record is."""
        info = odd.get(name)
        if not info:
            return "(not generated)"
        return f"eventID `{info['eventID']}` in `{info.get('file', '?')}`"

    dx = s["duplicate_examples"]
    lines = [
        "# sample_logs: synthetic CloudTrail for the miner",
        "",
        "Generated by `scripts/gen_sample_logs.py` (deterministic; never edit by hand). Regenerate with:",
        "",
        "```bash",
        s["regenerate"],
        "```",
        "",
        "Re-running produces byte-identical files. `EXPECTED.json` holds the counts a correct reader must find "
        "(tests assert against it).",
        "",
        "## Scope",
        "",
        f"- Dates: {s['start_date']} .. {s['end_date']} inclusive ({s['days']} days, eventTime UTC). Files are "
        f"named and foldered by delivery time (the end of a 5/10/15-minute batch), so "
        f"{s['records_in_next_day_folder']} records from just before midnight sit in the next day's folder "
        f"(folders run {s['folder_date_min']} .. {s['folder_date_max']}): list one extra day prefix.",
        f"- Regions: {', '.join(s['regions'])}.",
        "- Accounts (ids are strings; note the leading zero):",
        f"  - `{ACCT_PROD}` prod, own trail: `AWSLogs/{ACCT_PROD}/CloudTrail/<region>/YYYY/MM/DD/`",
        f"  - `{ACCT_CI}` CI/tooling, own trail: `AWSLogs/{ACCT_CI}/CloudTrail/...`",
        f"  - `{ACCT_AUDIT}` organization member logged by the org trail: "
        f"`AWSLogs/{ORG_ID}/{ACCT_AUDIT}/CloudTrail/...`",
        f"- {s['log_files']} log files ({s['compressed_bytes']:,} bytes gzip), {s['records_written']:,} records "
        f"written, {s['distinct_event_ids']:,} distinct eventIDs, {s['duplicate_records']} duplicate deliveries.",
        "- `iam/<account>.json`: `aws iam get-account-authorization-details` snapshots taken after the window "
        "(documents as JSON objects, as the CLI prints them; attached AWS managed policies are included in "
        "`Policies`, with reduced documents for the large ones).",
        f"- `iam/organizations.json`: the organization {ORG_ID} (management account {ACCT_MANAGEMENT}, no logs) and "
        "its SCPs and RCPs (docs/organizations.md). Prod sits in Workloads/Prod, whose SCP `ProtectProdData` denies "
        "destructive S3, DynamoDB, KMS and CloudTrail actions: part of orders-api-task's `s3:*`/`dynamodb:*` and "
        "legacy-batch's AdministratorAccess, shown as blocked by SCP rather than unused. The audit account sits "
        "in Security, whose allow-list SCP `SecurityAuditOnly` replaces FullAWSAccess. The root's `RegionGuard` SCP "
        "and `DataPerimeter` RCP deny only under Conditions (conditional, never counted as a block).",
        "",
        "## Principals",
        "",
        "| principal | kind | events | what it does |",
        "|---|---|---:|---|",
        f"| `{ROLE_ORDERS.arn}` | AssumedRole (ECS task; session = task id) | {pe.get(ROLE_ORDERS.arn, 0)} | "
        "DynamoDB GetItem/PutItem/Query/UpdateItem on table `orders` and Query on index `by-customer` (index only "
        "in requestParameters.indexName; resources[] holds the table), nightly PartiQL ExecuteStatement; S3 "
        f"Get/PutObject on `{ORDERS_BUCKET}/invoices/...`, CopyObject to `archive/`, DeleteObjects, multipart upload "
        "to `exports/`; nightly per-tenant reports Put/GetObject `tenants/<acme|globex|initech>/reports/YYYY/MM/DD/"
        "report-<uuid>.json` and a PutItem into the table of the month `orders-audit-YYYY-MM` (resource shapes that "
        "vary by date, request and tenant, for resource templates); SQS Send/Receive/DeleteMessage (queue only as `queueUrl`); KMS Decrypt/GenerateDataKey "
        "(keyId `alias/orders`; key ARN in resources[]) and ReEncrypt (two keys); secretsmanager GetSecretValue "
        "(by name); logs CreateLogStream. us-east-1 and eu-west-1 (its S3 calls are logged in the bucket's region "
        "us-east-1). Session ARN drops the `service-role/` path; sessionIssuer keeps it. Granted far more "
        "(`dynamodb:*`, `s3:*` on `*`, `kms:Decrypt` on `*`). `logs:PutLogEvents` is granted and used but never "
        "appears: CloudTrail does not log it (unobservable, not unused). |",
        f"| `{ROLE_THUMB.arn}` | AssumedRole (Lambda; session = function name) | {pe.get(ROLE_THUMB.arn, 0)} | "
        f"S3 GetObject `{MEDIA_BUCKET}/incoming/*` (a few `NoSuchKey`: authorised) and PutObject "
        "`thumbnails/*`; CreateLogStream by `awslambda-worker`. |",
        f"| `{ROLE_CI.arn}` | AssumedRole, assumed from `{USER_CIBOT.arn}` (session `gha-<run id>`) | "
        f"{pe.get(ROLE_CI.arn, 0)} | cloudformation CreateStack/UpdateStack/DescribeStacks; lambda "
        "GetFunction20150331v2/UpdateFunctionCode20150331v2/CreateFunction20150331 (passes a role: implies "
        "iam:PassRole, which is never logged itself); ecs RegisterTaskDefinition (taskRoleArn/executionRoleArn: "
        "PassRole); ecr GetAuthorizationToken; S3 PutObject to the artifacts bucket; CloudFront "
        "GetDistributionConfig2020_05_31/UpdateDistribution2020_05_31; 2x iam:CreateRole **AccessDenied** (not "
        "granted; the SSO admin then creates the role). Granted `cloudformation:*`, `iam:PassRole` on `*`. |",
        f"| `{USER_ALICE.arn}` | IAMUser (AKIA keys, rotated 2026-08-22) | {pe.get(USER_ALICE.arn, 0)} | "
        "ec2 DescribeInstances, s3 ListBuckets (requestParameters sometimes null), ListObjects (= ListObjectsV2), "
        "HeadBucket, cloudwatch GetMetricData (eventSource monitoring), sts GetCallerIdentity (needs no permission), "
        "ConsoleLogin (AwsConsoleSignIn; one failure with only errorMessage), 3x ec2 TerminateInstances "
        "`Client.UnauthorizedOperation` (boundary Deny), 1x StopInstances `Client.DryRunOperation` (authorised), "
        f"sts AssumeRole into `{ROLE_AUDIT.arn}`. In group `developers` (ec2:*), inline policy, permissions "
        "boundary `DeveloperBoundary` (NotAction + Deny). |",
        f"| `{ROLE_SSO.arn}` | AssumedRole (IAM Identity Center; session `{SSO_SESSION}`) | "
        f"{pe.get(ROLE_SSO.arn, 0)} | Console reads: ec2 Describe*, iam ListRoles/GetRole, s3 GetBucketPolicy "
        "(`NoSuchBucketPolicy`), kms ListKeys, connect GetMetricDataV2; on 2026-08-20 iam CreateRole + "
        "AttachRolePolicy. `sessionCredentialFromConsole`. AdministratorAccess. |",
        f"| `{ROLE_AUDIT.arn}` | AssumedRole in the org member account (assumed by alice) | "
        f"{pe.get(ROLE_AUDIT.arn, 0)} | config/cloudtrail Describe*/List*/Get* in 3 regions, iam List*/Get*; "
        "some `TrailNotFoundException`. ReadOnlyAccess. |",
        f"| `{ROLE_LEGACY.arn}` | AssumedRole (EC2 instance profile, `ec2RoleDelivery`) | "
        f"{pe.get(ROLE_LEGACY.arn, 0)} | s3 ListObjects on `{LEGACY_BUCKET}`, sqs GetQueueAttributes; nothing "
        "else in 45 days, yet AdministratorAccess. |",
        f"| `{ROLE_UNUSED.arn}` | role | 0 | Only in the IAM snapshot (glue:*, s3:*). |",
        f"| `{ROLE_WEBHOOK.arn}` | role | 0 | Created on 2026-08-20, passed to CreateFunction; never used. |",
        f"| `{ROLE_ECS_EXEC.arn}` | AssumedRole with `invokedBy: ecs-tasks.amazonaws.com` | "
        f"{pe.get(ROLE_ECS_EXEC.arn, 0)} | ECS agent at task start: ecr GetAuthorizationToken/BatchGetImage/"
        "GetDownloadUrlForLayer, logs CreateLogStream. |",
        f"| `{USER_CIBOT.arn}` | IAMUser in {ACCT_CI} | {pe.get(USER_CIBOT.arn, 0)} | sts GetCallerIdentity, "
        f"AssumeRole on ci-deploy (in the {ACCT_CI} tree). |",
        f"| `AWSAccount:{ACCT_CI}`, `AWSAccount:{ACCT_PROD}` | AWSAccount | "
        f"{pe.get('AWSAccount:' + ACCT_CI, 0)}, {pe.get('AWSAccount:' + ACCT_PROD, 0)} | The role owner's copy of "
        "a cross-account AssumeRole (same sharedEventID and requestID as the caller's copy, another eventID). |",
        f"| `cloudtrail.amazonaws.com` | AWSService | {pe.get('cloudtrail.amazonaws.com', 0)} | GetBucketAcl, "
        f"PutObject on `{TRAIL_BUCKET}`, kms GenerateDataKey. |",
        f"| `delivery.logs.amazonaws.com` | AWSService | {pe.get('delivery.logs.amazonaws.com', 0)} | GetBucketAcl, "
        "PutObject of VPC flow logs. |",
        f"| `ecs-tasks.amazonaws.com`, `lambda.amazonaws.com`, `ec2.amazonaws.com` | AWSService | "
        f"{pe.get('ecs-tasks.amazonaws.com', 0)}, {pe.get('lambda.amazonaws.com', 0)}, "
        f"{pe.get('ec2.amazonaws.com', 0)} | sts AssumeRole handing credentials to the task, function and "
        "instance roles. |",
        "",
        "## Deliberate oddities",
        "",
        f"- **Duplicates**: {s['duplicate_records']} records are delivered twice (byte-identical, same eventID): "
        "about half in a later file of the same account/region and day, half under another region's prefix. "
        "Dedupe on eventID.",
    ]
    for kind, ex in sorted(dx.items()):
        lines.append(f"  - {kind}: `{ex['eventID']}` in `{ex['first']}` and `{ex['second']}`")
    lines += [
        f"- **Corrupt file**: `{s['corrupt_file']}` is truncated gzip (a cut re-delivery of a batch that is also "
        "delivered intact). Report it and go on; counts in EXPECTED.json exclude it.",
        f"- **Digest file**: `{s['digest_file']}` (no `Records`; lists {s['digest_log_files']} log files with "
        "their SHA-256). Skip it.",
        f"- **Insight file**: `{s['insight_file']}` ({s['insight_records']} `AwsCloudTrailInsight` records: no "
        "userIdentity, eventSource/eventName only under insightDetails, float statistics). Not counted in "
        "records_written.",
        f"- **userAgent null**: {o('user_agent_null')}.",
        f"- **requestParameters null on a data event** (DynamoDB GetItem): {o('request_parameters_null')}.",
        f"- **resources null** (S3 GetObject): {o('resources_null')}.",
        "- **requestParameters null** on ListBuckets (about half) and GetCallerIdentity (all), and on "
        "ConsoleLogin.",
        f"- **Console failure without errorCode**: {o('console_login_failure')}.",
        f"- **AccessDenied** (ci-deploy iam:CreateRole): {o('access_denied_create_role')}.",
        f"- **Client.UnauthorizedOperation** (alice ec2:TerminateInstances): {o('unauthorized_operation')}.",
        f"- **Client.DryRunOperation** (alice ec2:StopInstances): {o('dry_run')}.",
        f"- **NoSuchBucketPolicy** (SSO GetBucketPolicy): {o('no_such_bucket_policy')}.",
        "- Throttling (`ThrottlingException` on KMS GenerateDataKey and secretsmanager), "
        "`ConditionalCheckFailedException` on DynamoDB UpdateItem, `NoSuchKey`, `TrailNotFoundException`: all "
        "authorised calls.",
        "- Versioned event names (`GetFunction20150331v2`, `CreateFunction20150331`, "
        "`UpdateDistribution2020_05_31`) next to `GetMetricDataV2` (connect), whose `V2` is part of the action.",
        "- `HeadBucket`/`ListObjects` resources carry an `ARNPrefix` instead of an `ARN`; S3 object resources have "
        "no accountId; bracketed S3 user agents; `bytesTransferredIn` as a float (`0.0`) on service writes.",
        "- `vpcEndpointId`/`vpcEndpointAccountId` with private source IPs on S3/DynamoDB calls; `tlsDetails` on "
        "most API calls; STS `expiration` in the non-ISO form `Aug 1, 2026, 6:12:44 AM`; eventVersion 1.08-1.11.",
        "- Records from before midnight in the next day's folder (see Scope).",
        "",
        "## Per-principal distinct events",
        "",
        "| principal | events |",
        "|---|---:|",
    ]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(pe.items())]
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (its AWSLogs/ and iam/ are replaced)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default 7)")
    ap.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days from 2026-08-01 (default 45)")
    ap.add_argument("--scale", type=float, default=1.0, help="event volume multiplier (default 1.0)")
    ap.add_argument("--no-extras", action="store_true",
                    help="only log files (no digest/insight/corrupt file, IAM snapshots, README, EXPECTED)")
    ap.add_argument("--compresslevel", type=int, default=9, help="gzip level (default 9)")
    ap.add_argument("--progress", action="store_true", help="print progress to stderr")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    stats = generate(args.out, seed=args.seed, days=args.days, scale=args.scale, sample_extras=not args.no_extras,
                     compresslevel=args.compresslevel, progress=args.progress)
    took = time.perf_counter() - started
    print(f"wrote {stats['log_files']} log files, {stats['records_written']} records "
          f"({stats['distinct_event_ids']} distinct, {stats['duplicate_records']} duplicates), "
          f"{stats['compressed_bytes'] / 1e6:.2f} MB to {args.out} in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
