"""`contrastlab data inspect`: what a user's shards hold, before a run fails on them."""
from __future__ import annotations

import collections
import tarfile

from .codecs import DecodeError
from .paths import resolve_shards
from .reader import decode_member, iter_tar_samples, sample_index
from .tar_stream import TAR_READ_BUFFER


def inspect_shards(pattern: str, decode: int = 32) -> dict:
    paths, fs = resolve_shards(pattern)
    members: collections.Counter = collections.Counter()
    n, errors, example, decoded = 0, [], None, 0
    for path in paths:
        stream = fs.open_input_stream(path, buffer_size=TAR_READ_BUFFER) if fs is not None else open(path, "rb")
        with stream:
            try:
                for sample in iter_tar_samples(stream, path, "raise"):
                    n += 1
                    members.update(k for k in sample if not k.startswith("__"))
                    if decoded < decode:
                        decoded += 1
                        try:
                            values = {k: decode_member(k, v) for k, v in sample.items() if not k.startswith("__")}
                            if example is None:
                                example = {"key": sample["__key__"], "shard": path,
                                           "index": sample_index(sample["__key__"], values.get("json"), path),
                                           **{k: (v if isinstance(v, (str, dict)) else f"{type(v).__name__} {getattr(v, 'shape', len(v))}") for k, v in values.items()}}
                        except DecodeError as exc:
                            errors.append(f"{path} key {sample['__key__']}: {exc}")
            except (RuntimeError, tarfile.TarError) as exc:
                errors.append(str(exc))
    return {"shards": len(paths), "samples": n, "members": dict(members), "decoded": decoded, "errors": errors, "example": example}
