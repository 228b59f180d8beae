"""Backup upload and download through the `ledgershare` command against raw aiobotocore,
and the command's peak memory on a 1 GB file.

The command runs as its own process, as a user runs it (interpreter start, login session
read, hashing, begin, parts, complete with the server's check); its peak RSS comes from
wait4(2). The raw baselines move the same file with the same part size and parallelism
through aiobotocore in this process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from runtime.s3 import s3_client
from runtime.settings import Settings

MB = 1024 * 1024
PARALLEL = 4  # contracts.transfer.upload's default


class Run(msgspec.Struct, frozen=True):
    seconds: float
    peak_rss_mb: float


def make_file(path: Path, size: int) -> None:
    """Random bytes (nothing compresses or dedups them)."""
    with path.open("wb") as f:
        for _ in range(size // MB):
            f.write(os.urandom(MB))


def stamp(path: Path, n: int) -> None:
    """Make the file's content new (the drive stores identical content only once)."""
    with path.open("r+b") as f:
        f.write(n.to_bytes(8, "big") + os.urandom(8))


def command(env: dict[str, str], *args: str, module: str = "cli.main") -> Run:
    """Run `ledgershare ARGS` (or another module); its wall time and peak RSS. Fails
    loudly on an error.

    The peak is the kernel's VmHWM of the running process, read every 10 ms (exec starts
    it afresh; wait4's ru_maxrss would count this parent's pages from before the exec)."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _peak_kib(proc.pid))
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"ledgershare {' '.join(args)} failed: {err.read().decode()}")
    return Run(seconds, peak / 1024)


def _peak_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0  # exited between poll and read
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


async def raw_upload(settings: Settings, path: Path, key: str, part_size: int) -> float:
    """Multipart PUT with aiobotocore, ``PARALLEL`` parts at a time; seconds."""
    started = time.perf_counter()
    size = (await asyncio.to_thread(path.stat)).st_size
    async with s3_client(settings, timeout_s=60) as s3:
        bucket = settings.s3_bucket
        mp = await s3.create_multipart_upload(Bucket=bucket, Key=key)
        slots = asyncio.Semaphore(PARALLEL)

        async def put(number: int) -> dict[str, object]:
            async with slots:
                offset = (number - 1) * part_size
                body = await asyncio.to_thread(_read, path, offset, part_size)
                reply = await s3.upload_part(Bucket=bucket, Key=key, UploadId=mp["UploadId"],
                                             PartNumber=number, Body=body)
                return {"PartNumber": number, "ETag": reply["ETag"]}

        count = -(-size // part_size)
        parts = await asyncio.gather(*(put(n) for n in range(1, count + 1)))
        await s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=mp["UploadId"],
                                           MultipartUpload={"Parts": list(parts)})
    return time.perf_counter() - started


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


async def raw_download(settings: Settings, key: str, path: Path) -> float:
    """GET streamed into a file with aiobotocore; seconds."""
    started = time.perf_counter()
    async with s3_client(settings, timeout_s=60) as s3:
        reply = await s3.get_object(Bucket=settings.s3_bucket, Key=key)
        with path.open("wb") as f:
            async with reply["Body"] as body:
                async for chunk in body.iter_chunks(MB):
                    f.write(chunk)
    return time.perf_counter() - started


class Figures(msgspec.Struct, frozen=True):
    """MB/s, best of the trials; commands are timed as processes, from start to exit."""

    size_mb: int
    upload: float  # `ledgershare backup upload`
    raw_upload: float  # `python -m bench.rawcopy put`
    download: float
    raw_download: float
    raw_upload_inproc: float  # the same aiobotocore calls inside this process
    raw_download_inproc: float
    big_mb: int
    upload_rss_mb: float
    download_rss_mb: float


def measure(settings: Settings, env: dict[str, str], work: Path, *, size_mb: int,
            big_mb: int, trials: int) -> Figures:
    """Best of ``trials`` for each way, ours and raw alternating; then the big file."""
    command(env, "member", "register", "bench", "--nickname", "Bench")
    command(env, "member", "login", "bench")
    path, back = work / "set.bak", work / "back.bak"
    make_file(path, size_mb * MB)
    times: dict[str, list[float]] = {}
    for i in range(trials):
        for name, seconds in _trial(settings, env, path, back, i):
            times.setdefault(name, []).append(seconds)
    path.unlink()
    back.unlink()
    best = {name: size_mb / min(t) for name, t in times.items()}
    big_up, big_down = _big(env, path, back, big_mb)
    return Figures(size_mb, best["up"], best["raw_up"], best["down"], best["raw_down"],
                   best["raw_up_inproc"], best["raw_down_inproc"], big_mb,
                   big_up.peak_rss_mb, big_down.peak_rss_mb)


def _trial(settings: Settings, env: dict[str, str], path: Path, back: Path,
           i: int) -> list[tuple[str, float]]:
    stamp(path, i)
    year, key = str(2000 + i), f"raw/{i}"
    return [
        ("up", command(env, "backup", "upload", str(path), "--set", "bench", "--year", year,
                       "--period", "1").seconds),
        ("raw_up", command(env, "put", str(path), key, module="bench.rawcopy").seconds),
        ("down", command(env, "backup", "download", "--set", "bench", "--year", year, "-o",
                         str(back)).seconds),
        ("raw_down", command(env, "get", key, str(back), module="bench.rawcopy").seconds),
        ("raw_up_inproc", asyncio.run(raw_upload(settings, path, key + "i",
                                                 settings.upload_part_bytes))),
        ("raw_down_inproc", asyncio.run(raw_download(settings, key + "i", back))),
    ]


def _big(env: dict[str, str], path: Path, back: Path, big_mb: int) -> tuple[Run, Run]:
    make_file(path, big_mb * MB)
    up = command(env, "backup", "upload", str(path), "--set", "big", "--year", "2000",
                 "--period", "1")
    path.unlink()
    down = command(env, "backup", "download", "--set", "big", "--year", "2000", "-o",
                   str(back))
    back.unlink()
    return up, down
