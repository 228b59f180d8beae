"""S3 client construction (aiobotocore) from settings."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from runtime.settings import Settings


def s3_client(settings: Settings, *, timeout_s: float = 5.0) -> AbstractAsyncContextManager[Any]:
    """An async S3 client context for the configured endpoint and credentials."""
    config = AioConfig(
        connect_timeout=timeout_s,
        read_timeout=max(timeout_s, 30.0),
        retries={"max_attempts": 1},
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )
    client: AbstractAsyncContextManager[Any] = get_session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=config,
    )
    return client


async def ensure_bucket(settings: Settings, bucket: str | None = None) -> None:
    """Create the bucket unless it exists (ListBuckets is unreliable on SeaweedFS: head it)."""
    name = bucket or settings.s3_bucket
    async with s3_client(settings, timeout_s=1.0) as s3:
        try:
            await s3.head_bucket(Bucket=name)
        except ClientError as err:
            if _status(err) != 404:
                raise
            await s3.create_bucket(Bucket=name)


def _status(err: ClientError) -> int:
    meta: dict[str, Any] = err.response.get("ResponseMetadata", {})
    return int(meta.get("HTTPStatusCode", 0))
