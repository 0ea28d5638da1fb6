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

_QUERY = re.compile(r"\?(?=[A-Za-z_][\w.-]*=)")  # a URI's query: '?' then 'key=' ('shard-?.tar' is a glob)


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


def _split_top_level(text: str) -> list[str]:
    """Split on the commas outside braces: 'a,d/{b,c}.tar' -> ['a', 'd/{b,c}.tar']."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _outer_brace(pattern: str) -> tuple[int, int] | None:
    """(start, end) of the first balanced outermost `{...}`; unmatched braces stay literal."""
    start = pattern.find("{")
    while start >= 0:
        depth = 0
        for i in range(start, len(pattern)):
            depth += {"{": 1, "}": -1}.get(pattern[i], 0)
            if depth == 0:
                return start, i
        start = pattern.find("{", start + 1)
    return None


def expand_braces(pattern: str) -> list[str]:
    """`a-{000..002}-{x,y}.tar` -> a-000-x.tar, a-000-y.tar, ... (zero padding kept). The outermost
    brace is expanded first, so lists nest: `x{a,{b,c}}` -> xa, xb, xc. Duplicates are dropped."""
    found = _outer_brace(pattern)
    if found is None:
        return [pattern]
    body = pattern[found[0] + 1 : found[1]]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        if int(hi) < int(lo):
            raise ShardPatternError(f"brace range {{{body}}} in {pattern!r} is empty (end < start)")
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = _split_top_level(body)
    head, tail = pattern[: found[0]], pattern[found[1] + 1 :]
    return list(dict.fromkeys(itertools.chain.from_iterable(expand_braces(head + o + tail) for o in options)))


def _is_uri(p: str) -> bool:
    return "://" in p and not p.startswith("file://")


def resolve_shards(pattern: str | list[str]) -> tuple[list[str], object | None]:
    """Return (paths, pyarrow filesystem or None for local). Raises ShardPatternError on no match."""
    if isinstance(pattern, (list, tuple)):
        parts = list(pattern)
    else:
        # commas inside braces belong to a brace list (`dir/{a,b}-000.tar`), not to the shard list
        parts = [p.strip() for p in _split_top_level(str(pattern)) if p.strip()]
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
    return list(dict.fromkeys(paths)), filesystem  # a shard named twice (overlapping patterns) is read once


def _split_query(uri: str) -> tuple[str, str]:
    """'s3://b/a.tar?endpoint_override=h:9000' -> ('s3://b/a.tar', '?endpoint_override=h:9000').
    The query configures the filesystem: it is no part of the object's path, and its '?' is no glob."""
    m = _QUERY.search(uri)
    return (uri, "") if m is None else (uri[: m.start()], uri[m.start():])


def _from_uri(uri: str):
    import pyarrow.fs as pafs

    try:
        return _with_timeout(repr(uri), pafs.FileSystem.from_uri, uri)
    except ShardPatternError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad URIs
        raise ShardPatternError(f"cannot open {uri!r}: {exc}. Check the scheme (s3://, gs://) and credentials") from None


def _resolve_remote(uri: str):
    """(filesystem, paths) of a remote URI or glob. Paths are the ones pyarrow's `from_uri` returns (for
    hdfs:// or file:// they are not what follows '://'; a query such as `?endpoint_override=...`
    configures the filesystem and is not part of them)."""
    import pyarrow.fs as pafs

    base, query = _split_query(uri)
    if not glob.has_magic(base):
        fs, path = _from_uri(uri)
        try:
            info = _with_timeout(repr(uri), fs.get_file_info, path)
        except ShardPatternError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ShardPatternError(f"cannot reach {uri!r}: {exc}") from None
        if info.type == pafs.FileType.NotFound:
            raise ShardPatternError(f"shard {uri!r} does not exist")
        return fs, [path]
    # a glob: list its folder once and match the names there
    magic = min(i for i in (base.find(c) for c in "*?[") if i >= 0)
    folder_uri = base[:magic].rsplit("/", 1)[0]
    fs, probe = _from_uri(folder_uri + "/x" + query)
    parent = probe.rsplit("/", 1)[0]
    name_pattern = parent + "/" + base[len(folder_uri) + 1 :]
    try:
        infos = _with_timeout(repr(folder_uri), fs.get_file_info, pafs.FileSelector(parent, recursive=False))
    except ShardPatternError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ShardPatternError(f"cannot list {folder_uri}: {exc}") from None
    found = sorted(i.path for i in infos if fnmatch.fnmatch(i.path, name_pattern))
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
