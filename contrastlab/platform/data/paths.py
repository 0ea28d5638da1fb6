"""Shard URL patterns -> concrete shard paths, with errors that say what to fix.

Accepted: a path, a comma-separated list, globs (`shards/*.tar`), brace ranges and lists
(`train-{00000..00099}.tar`, `{a,b}.tar`, webdataset/img2dataset style), and URIs that pyarrow
understands (`s3://`, `gs://`, `hdfs://`, `file://`). Brace patterns on object stores are expanded
without listing the bucket; globs there list the parent prefix once.
"""
from __future__ import annotations

import fnmatch
import glob
import itertools
import os
import re
import threading

_BRACE = re.compile(r"\{([^{}]*)\}")


class ShardPatternError(ValueError):
    pass


# Object-store look-ups give up after this many seconds instead of hanging: with no route to the
# service, pyarrow's GCS client retries for many minutes (measured: >120 s for a gs:// path).
URI_TIMEOUT_S = float(os.environ.get("CONTRASTLAB_URI_TIMEOUT_S", "30"))


def _with_timeout(what: str, fn, *args):
    """Run a blocking object-store call in a daemon thread; ShardPatternError if it takes too long."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True, name="contrastlab-uri-probe")
    t.start()
    t.join(URI_TIMEOUT_S)
    if t.is_alive():
        raise ShardPatternError(
            f"cannot reach {what}: no answer within {URI_TIMEOUT_S:g} s (set CONTRASTLAB_URI_TIMEOUT_S to wait longer). "
            f"Check the bucket name, the network route and credentials"
        )
    if "error" in box:
        raise box["error"]
    return box.get("value")


def expand_braces(pattern: str) -> list[str]:
    """`a-{000..002}-{x,y}.tar` -> a-000-x.tar, a-000-y.tar, ... (zero padding kept)."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        if int(hi) < int(lo):
            raise ShardPatternError(f"brace range {{{body}}} in {pattern!r} is empty (end < start)")
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[: m.start()], pattern[m.end():]
    return list(itertools.chain.from_iterable(expand_braces(head + o + tail) for o in options))


def _is_uri(p: str) -> bool:
    return "://" in p and not p.startswith("file://")


def resolve_shards(pattern: str | list[str]) -> tuple[list[str], object | None]:
    """Return (paths, pyarrow filesystem or None for local). Raises ShardPatternError on no match."""
    if isinstance(pattern, (list, tuple)):
        parts = list(pattern)
    else:
        parts = [p.strip() for p in str(pattern).split(",") if p.strip()]
    if not parts:
        raise ShardPatternError("empty shard list: pass --data with a path, glob or brace pattern (e.g. 'shards/train-{00000..00009}.tar')")
    paths: list[str] = []
    filesystem = None
    for part in parts:
        if part.startswith("file://"):
            part = part[len("file://"):]
        for candidate in expand_braces(part):
            if _is_uri(candidate):
                fs, found = _resolve_remote(candidate)
                filesystem = fs
                paths.extend(found)
            else:
                candidate = os.path.expanduser(candidate)
                if glob.has_magic(candidate):
                    found = sorted(glob.glob(candidate))
                    if not found:
                        raise ShardPatternError(f"the glob {candidate!r} (from {pattern!r}) matches no file")
                    paths.extend(found)
                else:
                    if not os.path.exists(candidate):
                        raise ShardPatternError(
                            f"shard {candidate!r} (from pattern {pattern!r}) does not exist; check the path, "
                            f"or the brace range if you used one"
                        )
                    if os.path.isdir(candidate):
                        found = sorted(glob.glob(os.path.join(candidate, "*.tar")))
                        if not found:
                            raise ShardPatternError(f"directory {candidate!r} holds no *.tar shards")
                        paths.extend(found)
                    else:
                        paths.append(candidate)
    if not paths:
        raise ShardPatternError(f"the pattern {pattern!r} matches no shard")
    return paths, filesystem


def _resolve_remote(uri: str):
    import pyarrow.fs as pafs

    try:
        fs, path = _with_timeout(repr(uri), pafs.FileSystem.from_uri,
                                 uri.split("*")[0].rsplit("/", 1)[0] + "/x" if glob.has_magic(uri) else uri)
    except ShardPatternError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad URIs
        raise ShardPatternError(f"cannot open {uri!r}: {exc}. Check the scheme (s3://, gs://) and credentials") from None
    scheme, rest = uri.split("://", 1)
    if not glob.has_magic(uri):
        try:
            info = _with_timeout(repr(uri), fs.get_file_info, rest)
        except ShardPatternError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ShardPatternError(f"cannot reach {uri!r}: {exc}") from None
        if info.type == pafs.FileType.NotFound:
            raise ShardPatternError(f"shard {uri!r} does not exist")
        return fs, [rest]
    parent = rest.rsplit("/", 1)[0]
    try:
        infos = _with_timeout(f"{scheme}://{parent}", fs.get_file_info, pafs.FileSelector(parent, recursive=False))
    except ShardPatternError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ShardPatternError(f"cannot list {scheme}://{parent}: {exc}") from None
    found = sorted(i.path for i in infos if fnmatch.fnmatch(i.path, rest))
    if not found:
        raise ShardPatternError(f"the glob {uri!r} matches no object")
    return fs, found


def manifest_count(paths: list[str]) -> int | None:
    """Total samples from `*.manifest.json` sidecars written by contrastlab, or None if any is missing."""
    import json

    counts: dict[str, int] = {}
    dirs = {os.path.dirname(p) for p in paths if not _is_uri(p)}
    if len(dirs) == 0:
        return None
    for d in dirs:
        for m in glob.glob(os.path.join(d, "*.manifest.json")):
            with open(m) as fh:
                data = json.load(fh)
            for name, count in zip(data["shards"], data["counts"]):
                counts[os.path.join(d, name)] = count
    try:
        return sum(counts[p] for p in paths)
    except KeyError:
        return None
