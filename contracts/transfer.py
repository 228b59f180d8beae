"""Moving account-set files to and from S3 over presigned URLs, streamed from and to disk.

Memory stays bounded by one chunk per part in flight, whatever the file's size.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp

from contracts.storage import Part, StorageUnavailable, UploadPlan

CHUNK = 1024 * 1024
MIN_SPAN = 16 * 1024 * 1024
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
                            headers={**part.headers, "Content-Length": str(part.size)}
                            ) as reply:
            if reply.status >= 300:
                text = (await reply.text())[:300]
                raise StorageUnavailable(f"file storage refused part {part.number}: "
                                         f"{reply.status} {text}")
    except aiohttp.ClientError as err:
        raise StorageUnavailable(f"file storage unreachable: {err}") from err


async def download(url: str, path: Path, *, size: int | None = None,
                   progress: Progress = lambda _n: None, parallel: int = 4) -> int:
    """GET a presigned URL into a file; returns the bytes written. With the size known,
    a large file comes as ``parallel`` byte ranges at once, each written in place."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    spans = _spans(size, parallel) if size is not None else [(0, None)]
    with path.open("wb") as f:
        if size is not None:
            f.truncate(size)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                got = await asyncio.gather(*(_get_span(http, url, f.fileno(), start, end,
                                                       progress) for start, end in spans))
        except aiohttp.ClientError as err:
            raise StorageUnavailable(f"file storage unreachable: {err}") from err
    if size is not None and sum(got) != size:
        raise StorageUnavailable(f"the download has {sum(got)} bytes, not {size}")
    return sum(got)


def _spans(size: int, parallel: int) -> list[tuple[int, int | None]]:
    """Byte ranges [start, end) covering the file, none smaller than MIN_SPAN; a small
    file is one plain GET."""
    if size < 2 * MIN_SPAN or parallel < 2:
        return [(0, None)]
    step = -(-size // min(parallel, size // MIN_SPAN))
    return [(start, min(start + step, size)) for start in range(0, size, step)]


async def _get_span(http: aiohttp.ClientSession, url: str, fd: int, start: int,
                    end: int | None, progress: Progress) -> int:
    """One range of the object written at its place in the file; returns its length."""
    headers = {} if end is None else {"Range": f"bytes={start}-{end - 1}"}
    async with http.get(url, headers=headers) as reply:
        if reply.status >= 300:
            raise StorageUnavailable(f"file storage refused the download: {reply.status}")
        at = start
        async for chunk in reply.content.iter_chunked(CHUNK):
            # pwrite into the page cache is a memory copy: cheaper inline than a thread hop.
            os.pwrite(fd, chunk, at)
            at += len(chunk)
            progress(len(chunk))
    if end is not None and at != end:
        raise StorageUnavailable(f"the download broke off at byte {at} of {end}")
    return at - start
