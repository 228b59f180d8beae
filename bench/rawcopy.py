"""The raw baseline as a command: `python -m bench.rawcopy put FILE KEY | get KEY FILE`.

A minimal aiobotocore script (multipart PUT, or GET streamed to a file) with the stack's
settings, so that `ledgershare backup upload|download` can be compared process to process:
both pay an interpreter start and their imports.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bench.transfer import raw_download, raw_upload
from runtime.settings import load_settings


def main() -> None:
    verb, a, b = sys.argv[1:4]
    settings = load_settings()
    if verb == "put":
        asyncio.run(raw_upload(settings, Path(a), b, settings.upload_part_bytes))
    else:
        asyncio.run(raw_download(settings, a, Path(b)))


if __name__ == "__main__":
    main()
