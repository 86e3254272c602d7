"""boto3 sessions and client settings shared by the AWS sources (S3 trail buckets, CloudTrail LookupEvents)."""

from __future__ import annotations

import os


def session(profile: str | None, error: type[Exception]):
    """A boto3 session on the standard credential chain, or on a named profile.

    Args:
        profile: a profile of the AWS config (``--profile``), or ``None``.
        error: the exception class raised when the profile does not exist (one line).

    Returns:
        A ``boto3.session.Session``.
    """
    import boto3
    import botocore.exceptions

    try:
        return boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
    except botocore.exceptions.ProfileNotFound:
        raise error(f"AWS profile {profile!r} not found in ~/.aws/config or ~/.aws/credentials") from None


def client_config(**kw):
    """Client settings: adaptive retries with backoff on throttling (10 retries, 11 attempts in all; the standard
    ``AWS_MAX_ATTEMPTS`` (attempts in all, the first included) and ``AWS_RETRY_MODE`` variables override), 10 s to
    connect, 60 s to read.

    Args:
        kw: more ``botocore.config.Config`` settings (e.g. ``max_pool_connections``).

    Returns:
        A ``botocore.config.Config``.
    """
    import botocore.config

    # botocore's "max_attempts" counts retries; AWS_MAX_ATTEMPTS, like "total_max_attempts", counts the first too
    total = os.environ.get("AWS_MAX_ATTEMPTS")
    retries = {**({"total_max_attempts": int(total)} if total else {"max_attempts": 10}),
               "mode": os.environ.get("AWS_RETRY_MODE") or "adaptive"}
    return botocore.config.Config(retries=retries, connect_timeout=10, read_timeout=60, **kw)


def common_error(e: Exception, what: str, service: str) -> str | None:
    """The one-line message of the errors every AWS source shares, or ``None`` for the others (``ClientError``:
    each source says what its codes mean).

    Args:
        e: the exception.
        what: what was being done (``"listing s3://b/"``).
        service: the service's name for the message (``S3``).

    Returns:
        The message, or ``None``.
    """
    import botocore.exceptions as be

    if isinstance(e, be.NoCredentialsError):
        return ("no AWS credentials found: use --profile, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or "
                "configure ~/.aws/credentials")
    if isinstance(e, (be.EndpointConnectionError, be.ConnectTimeoutError)):
        return f"cannot reach the {service} endpoint while {what}: {e}"
    if isinstance(e, be.BotoCoreError):
        return f"{service} request failed while {what}: {e}"
    return None
