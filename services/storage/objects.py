"""storage's S3 adapter: presigned URLs, multipart bookkeeping, verification. The only file
of the service that talks S3; every failure to reach S3 becomes `StorageUnavailable`."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import ClientError as HttpError
from botocore.exceptions import BotoCoreError, ClientError

from contracts.storage import StorageUnavailable

READ_CHUNK = 1024 * 1024


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

    async def put_url(self, key: str) -> str:
        return await self._presign("put_object", Key=key)

    async def get_url(self, key: str, filename: str) -> str:
        return await self._presign("get_object", Key=key,
                                   ResponseContentDisposition=f'attachment; filename="{filename}"')

    async def part_url(self, key: str, multipart_id: str, number: int) -> str:
        return await self._presign("upload_part", Key=key, UploadId=multipart_id,
                                   PartNumber=number)

    async def _presign(self, method: str, **params: Any) -> str:
        url: str = await self.s3.generate_presigned_url(
            method, Params={"Bucket": self.bucket, **params}, ExpiresIn=self.url_ttl_s)
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

    async def delete(self, key: str) -> None:
        async with self._reaching("deleting a file"):
            await self.s3.delete_object(Bucket=self.bucket, Key=key)
