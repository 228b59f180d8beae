"""storage's S3 adapter: presigned URLs, multipart bookkeeping, verification. The only file
of the service that talks S3; every failure to reach S3 becomes `StorageUnavailable`.

Immutable bytes. Callers write only under ``uploads/<owner>/<upload_id>`` (a random
upload id per upload), and a URL can only ever write the bytes the upload declared: a
single PUT is presigned with its length and its SHA-256 as signed headers
(``x-amz-checksum-sha256``), so the S3 server refuses any other bytes, even after the
upload was verified and while the URL is still valid; a multipart upload's part URLs stop
working once storage completes it (before verifying). So the verified object is the
version's object, with no copy. No URL is ever presigned for writing anywhere else.

What SeaweedFS 4.48 enforces on presigned PUTs (tests/integration/test_storage_attacks.py
measures it on the configured server): a signed Content-Length refuses another length but
takes other bytes of the same length; a signed x-amz-checksum-sha256 refuses other bytes
(400 BadDigest) and a request without that header (403); a part PUT after its multipart
upload completed is refused (404 NoSuchUpload). A plain presigned PUT stays writable to
its expiry: that is why no plain PUT is presigned. (A server-side copy to a key no URL
addresses was tried: it held too, but cost 25% of upload throughput.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from aiohttp import ClientError as HttpError
from botocore.exceptions import BotoCoreError, ClientError

from contracts.storage import StorageUnavailable

READ_CHUNK = 1024 * 1024
STAGING = "uploads/"


def staging_key(owner: str, upload_id: str) -> str:
    """Where an upload's URLs write the declared bytes (and the version keeps them)."""
    return f"{STAGING}{owner}/{upload_id}"


def attachment(filename: str) -> str:
    """A Content-Disposition that no name can break (RFC 6266): an ASCII fallback of safe
    characters only, and the exact name percent-encoded in ``filename*``."""
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_"
                       for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class ObjectStore:
    """One bucket through an open aiobotocore client."""

    def __init__(self, s3: Any, bucket: str, *, url_ttl_s: int) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.url_ttl_s = url_ttl_s

    @asynccontextmanager
    async def _reaching(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NoSuchUpload"):
                raise
            raise StorageUnavailable(f"file storage refused {what} ({code})") from err
        except (BotoCoreError, HttpError, OSError, TimeoutError) as err:
            raise StorageUnavailable(f"file storage is unavailable ({what}); try again later"
                                     ) from err

    async def check(self) -> None:
        """Fail with StorageUnavailable unless the bucket answers now."""
        async with self._reaching("a health check"):
            await self.s3.head_bucket(Bucket=self.bucket)

    async def put_url(self, key: str, size: int, sha256: str) -> tuple[str, dict[str, str]]:
        """A URL that writes exactly these bytes, and the headers the PUT must send."""
        checksum = base64.b64encode(bytes.fromhex(sha256)).decode("ascii")
        url = await self._presign("put_object", Key=_writable(key), ContentLength=size,
                                  ChecksumSHA256=checksum)
        return url, {"x-amz-checksum-sha256": checksum}

    async def get_url(self, key: str, filename: str, *, ttl_s: int | None = None) -> str:
        return await self._presign("get_object", Key=key, ttl_s=ttl_s,
                                   ResponseContentDisposition=attachment(filename))

    async def part_url(self, key: str, multipart_id: str, number: int) -> str:
        return await self._presign("upload_part", Key=_writable(key), UploadId=multipart_id,
                                   PartNumber=number)

    async def _presign(self, method: str, *, ttl_s: int | None = None, **params: Any) -> str:
        url: str = await self.s3.generate_presigned_url(
            method, Params={"Bucket": self.bucket, **params},
            ExpiresIn=self.url_ttl_s if ttl_s is None else ttl_s)
        return url

    async def start_multipart(self, key: str) -> str:
        async with self._reaching("starting a multipart upload"):
            reply = await self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)
        return str(reply["UploadId"])

    async def finish_multipart(self, key: str, multipart_id: str, expected_parts: int) -> int:
        """Complete a multipart upload from the parts S3 holds; returns how many it had."""
        async with self._reaching("listing uploaded parts"):
            parts = await self._parts(key, multipart_id)
        if len(parts) != expected_parts:
            return len(parts)
        async with self._reaching("completing a multipart upload"):
            await self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=multipart_id,
                MultipartUpload={"Parts": parts})
        return len(parts)

    async def _parts(self, key: str, multipart_id: str) -> list[dict[str, Any]]:
        try:
            reply = await self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=multipart_id)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return []
            raise
        return [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                for p in reply.get("Parts", [])]

    async def abort_multipart(self, key: str, multipart_id: str) -> None:
        async with self._reaching("aborting a multipart upload"):
            try:
                await self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key,
                                                     UploadId=multipart_id)
            except ClientError:
                pass  # already completed or aborted

    async def size_of(self, key: str) -> int | None:
        """The object's size, or None if there is no such object."""
        async with self._reaching("checking an uploaded file"):
            try:
                head = await self.s3.head_object(Bucket=self.bucket, Key=key)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    return None
                raise
        return int(head["ContentLength"])

    async def sha256_of(self, key: str) -> str:
        """SHA-256 of the object, streamed (never held whole in memory)."""
        digest = hashlib.sha256()
        async with self._reaching("reading an uploaded file"):
            reply = await self.s3.get_object(Bucket=self.bucket, Key=key)
            async with reply["Body"] as body:
                async for chunk in body.iter_chunks(READ_CHUNK):
                    # hashlib drops the GIL on large buffers: hash beside the event loop.
                    await asyncio.to_thread(digest.update, chunk)
        return digest.hexdigest()

    async def keys_under(self, prefix: str) -> list[str]:
        """Every key that starts with the prefix."""
        keys: list[str] = []
        async with self._reaching("listing files"):
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=prefix)
            async for page in pages:
                keys.extend(str(o["Key"]) for o in page.get("Contents", []))
        return keys

    async def delete(self, key: str) -> None:
        async with self._reaching("deleting a file"):
            await self.s3.delete_object(Bucket=self.bucket, Key=key)


def _writable(key: str) -> str:
    """The key, if a URL may write it: only an upload's own key."""
    if not key.startswith(STAGING):
        raise ValueError(f"refusing to presign a write to {key!r}: only {STAGING} is writable")
    return key
