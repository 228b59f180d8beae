"""Moving account-set files to and from S3 over presigned URLs, streamed from and to disk.

Memory stays bounded by one chunk per part in flight, whatever the file's size.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp

from contracts.storage import Part, StorageUnavailable, UploadPlan

CHUNK = 256 * 1024
Progress = Callable[[int], None]


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


async def _read_part(path: Path, part: Part, progress: Progress) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        f.seek(part.offset)
        left = part.size
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            progress(len(chunk))
            yield chunk


async def upload(plan: UploadPlan, path: Path, *, progress: Progress = lambda _n: None,
                 parallel: int = 4) -> None:
    """PUT every part of the plan from the file (a few parts at a time)."""
    slots = asyncio.Semaphore(parallel)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async def put(part: Part) -> None:
            async with slots:
                await _put(http, part, path, progress)

        await asyncio.gather(*(put(p) for p in plan.parts))


async def _put(http: aiohttp.ClientSession, part: Part, path: Path, progress: Progress) -> None:
    try:
        async with http.put(part.url, data=_read_part(path, part, progress),
                            headers={"Content-Length": str(part.size)}) as reply:
            if reply.status >= 300:
                text = (await reply.text())[:300]
                raise StorageUnavailable(f"file storage refused part {part.number}: "
                                         f"{reply.status} {text}")
    except aiohttp.ClientError as err:
        raise StorageUnavailable(f"file storage unreachable: {err}") from err


async def download(url: str, path: Path, *, progress: Progress = lambda _n: None) -> int:
    """GET a presigned URL into a file; returns the bytes written."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    written = 0
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as reply:
            if reply.status >= 300:
                raise StorageUnavailable(f"file storage refused the download: {reply.status}")
            with path.open("wb") as f:
                async for chunk in reply.content.iter_chunked(CHUNK):
                    await asyncio.to_thread(f.write, chunk)
                    written += len(chunk)
                    progress(len(chunk))
    except aiohttp.ClientError as err:
        raise StorageUnavailable(f"file storage unreachable: {err}") from err
    return written
