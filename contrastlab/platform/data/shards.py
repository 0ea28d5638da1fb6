"""Writing webdataset shards: plain POSIX tar files whose members are named `key.ext`.

Writers are deterministic (fixed mtime/owner) so the same generator seed gives byte-identical
shards, and atomic (written to `*.tmp`, renamed on close) so a crash never leaves a torn shard
that a later run would read. Every sample gets a stable integer `index` in its json.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterable, Mapping

from .codecs import encode_field


class ShardWriter:
    """Write samples into `directory/prefix-00000.tar`, `-00001.tar`, ... with `maxcount` samples each.

    `write(key, {"jpg": bytes, "txt": str, "json": dict, ...})`: extensions may contain dots
    (`table.json`). Use as a context manager; `close()` returns the shard paths written.
    """

    def __init__(self, directory: str | os.PathLike, prefix: str = "shard", maxcount: int = 1000):
        if maxcount < 1:
            raise ValueError(f"maxcount must be >= 1, got {maxcount}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix, self.maxcount = prefix, maxcount
        self.paths: list[str] = []
        self.counts: list[int] = []
        self._tar: tarfile.TarFile | None = None
        self._count = 0
        self._keys: set[str] = set()

    def _open_next(self) -> None:
        self._close_current()
        path = self.directory / f"{self.prefix}-{len(self.paths):05d}.tar"
        self._tmp = str(path) + ".tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self.paths.append(str(path))
        self.counts.append(0)
        self._count = 0

    def _close_current(self) -> None:
        if self._tar is not None:
            self._tar.close()
            os.replace(self._tmp, self.paths[-1])
            self._tar = None

    def write(self, key: str, fields: Mapping[str, object]) -> None:
        if "." in key or "/" in key:
            raise ValueError(f"sample key {key!r} may not contain '.' or '/' (webdataset splits on the first dot)")
        if key in self._keys:
            raise ValueError(f"duplicate sample key {key!r}")
        self._keys.add(key)
        if self._tar is None or self._count >= self.maxcount:
            self._open_next()
        for ext, value in fields.items():
            data = encode_field(value)
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uname = info.gname = "contrastlab"
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self.counts[-1] += 1

    def close(self) -> list[str]:
        self._close_current()
        return list(self.paths)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self._tar is not None:
            self._tar.close()
            os.unlink(self._tmp)
            self.paths.pop()
            self._tar = None
            return
        self.close()


def write_shards(
    samples: Iterable[tuple[str, Mapping[str, object]]],
    directory: str | os.PathLike,
    prefix: str = "shard",
    maxcount: int = 1000,
) -> list[str]:
    """Write `(key, fields)` pairs to shards and an `index.json` sidecar with per-shard sample counts."""
    with ShardWriter(directory, prefix, maxcount) as writer:
        for key, fields in samples:
            writer.write(key, fields)
    paths = writer.close()
    write_manifest(directory, prefix, paths, writer.counts)
    return paths


def write_manifest(directory, prefix: str, paths: list[str], counts: list[int]) -> None:
    """Sample counts per shard: lets the loop size epochs and LR schedules without a counting pass."""
    manifest = Path(directory) / f"{prefix}.manifest.json"
    tmp = str(manifest) + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"shards": [os.path.basename(p) for p in paths], "counts": counts, "total": sum(counts)}, fh)
    os.replace(tmp, manifest)
