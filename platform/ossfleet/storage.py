"""Where tenants' files live: a local folder or any fsspec URL (s3://, gs://, ...).

Batch files and LoRA adapters share it. Paths are ``<root>/<tenant>/<file id>.jsonl``
and ``<root>/<tenant>/adapters/<model>/<name>/<digest>/``: one tenant's files never
share a folder with another's, and no caller-supplied name reaches a path unchecked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec

from ossfleet.errors import Unavailable


class FileStorage:
    """Opened on first use: a gateway starts even where the storage's fsspec driver
    (s3fs for s3://) is missing, and batch calls then say what to install."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opened: tuple[Any, str] | None = None

    def _open(self) -> tuple[Any, str]:
        if self._opened is None:
            try:
                self._opened = fsspec.core.url_to_fs(self.url)
            except (ImportError, ValueError) as e:
                raise Unavailable(f"file storage {self.url!r} cannot be opened: {e}") from None
        return self._opened

    @property
    def fs(self) -> Any:
        return self._open()[0]

    @property
    def root(self) -> str:
        return self._open()[1]

    @property
    def protocol(self) -> str:
        p = self.fs.protocol
        return p if isinstance(p, str) else p[0]

    def path(self, tenant: str, name: str) -> str:
        return f"{self.root.rstrip('/')}/{tenant}/{name}"

    def put(self, path: str, data: bytes) -> None:
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with self.fs.open(path, "wb") as f:
            f.write(data)

    def write_lines(self, path: str, lines: Iterator[str]) -> int:
        """Write lines (each ending in a newline); returns the bytes written."""
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        n = 0
        with self.fs.open(path, "wb") as f:
            for line in lines:
                b = line.encode() + b"\n"
                f.write(b)
                n += len(b)
        return n

    def get(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as f:
            return bytes(f.read())

    def iter_lines(self, path: str) -> Iterator[str]:
        with self.fs.open(path, "rb") as f:
            for raw in f:
                yield raw.decode().rstrip("\n")

    def delete(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path)

    def delete_tree(self, path: str) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
