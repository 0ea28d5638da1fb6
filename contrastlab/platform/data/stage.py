"""Shard-to-shard preprocessing stages: one task per input shard, on Ray Data or in-process.

Offline work that must run once before training (mining, rewriting, feature extraction) is
written as two passes over webdataset shards:

- `collect_shards(paths, fn)`: an index pass. `fn(sample)` returns a small dict (or None to skip)
  for every sample; the results come back to the driver in shard/sample order, where the global
  structures (neighbour indices, pools) are built once.
- `map_shards(paths, out_dir, prefix, fn, context)`: the build pass. Input shard i becomes output
  shard `<prefix>-<i:05d>.tar` holding `fn(sample, context) -> (key, fields)` for each of its
  samples, followed by `<prefix>.manifest.json` (the format `write_shards` writes).

Samples are the raw member dicts of `reader.iter_tar_samples` (`__key__`, `__url__`, ext -> bytes).
`engine="ray"` runs the per-shard function as Ray Data CPU tasks (`from_items` over the shard paths,
one block per shard), so the stage scales out over CPU nodes; the context is `ray.put` once and
every task reads it from the object store. Tasks write their shards themselves, so on a multi-node
cluster `out_dir` must be storage every node sees (NFS, the usual cache setup); input shards are read
the same way. `engine="local"` runs the same function in a loop.
Both give byte-identical shards: the per-shard function is the same, and shards are written with
the deterministic `ShardWriter`. `engine="auto"` picks ray when this process is connected to Ray.
"""
from __future__ import annotations

import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable

from .reader import iter_tar_samples
from .shards import ShardWriter, write_manifest

IndexFn = Callable[[dict], "dict | None"]
BuildFn = Callable[[dict, Any], "tuple[str, dict]"]

ENGINES = ("auto", "ray", "local")


def resolve_engine(engine: str) -> str:
    """'auto' -> 'ray' if this process is connected to a Ray cluster, else 'local'."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    # Without `import ray` having happened nothing can be initialised: skip the 1-2 s import.
    ray = sys.modules.get("ray")
    return "ray" if ray is not None and ray.is_initialized() else "local"


# --------------------------------------------------------------------------- per-shard work
def _read(path: str):
    with open(path, "rb") as fh:
        yield from iter_tar_samples(fh, path, "raise")  # a corrupt input shard fails the stage


def _collect_one(path: str, fn: IndexFn) -> list:
    return [r for r in map(fn, _read(path)) if r is not None]


def shard_name(prefix: str, i: int) -> str:
    return f"{prefix}-{i:05d}.tar"


def _staging_dir(out_dir: Path, prefix: str) -> Path:
    # Hidden, inside out_dir (same filesystem, so the final rename is atomic) and outside `*.tar` globs.
    return out_dir / f".{prefix}.staging"


def _map_one(i: int, path: str, out_dir: str, prefix: str, fn: BuildFn, context) -> int:
    """Input shard i -> output shard `<prefix>-<i:05d>.tar`; returns its sample count.

    Idempotent (same bytes on every run), so a retried Ray task simply rewrites its shard."""
    out_dir = Path(out_dir)
    final = out_dir / shard_name(prefix, i)
    # ShardWriter numbers its own shards from 0: give it a unique prefix in the staging folder and
    # rename its single shard to the input's number (it already writes *.tmp and renames on close).
    staging = _staging_dir(out_dir, prefix)
    with ShardWriter(staging, prefix=f"{prefix}-{i:05d}", maxcount=sys.maxsize) as writer:
        for sample in _read(path):
            writer.write(*fn(sample, context))
    written = writer.close()
    if written:
        os.replace(written[0], final)
    else:  # an empty input shard still gets its (empty) output shard: numbering stays 1:1
        tmp = str(final) + ".tmp"
        tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT).close()
        os.replace(tmp, final)
    return writer.counts[0] if writer.counts else 0


# --------------------------------------------------------------------------- engines
def _run_per_shard(paths: list[str], task: Callable[[int, str, Any], Any], context, engine: str, num_cpus: float) -> list:
    """`task(i, path, context)` for every shard (any picklable result), results in shard order."""
    if engine == "local" or not paths:
        return [task(i, p, context) for i, p in enumerate(paths)]
    import ray
    import ray.data

    ctx_ref = ray.put(context)  # once: every task reads the same object-store copy

    def run(row: dict) -> dict:
        i = int(row["i"])
        out = task(i, row["path"], ray.get(ctx_ref))
        # Pickled, so arbitrary results (tuples, nested dicts, bytes) survive Ray Data's Arrow blocks.
        return {"i": i, "result": pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)}

    ds = ray.data.from_items([{"i": i, "path": p} for i, p in enumerate(paths)], override_num_blocks=len(paths))
    rows = ds.map(run, num_cpus=num_cpus).take_all()
    rows.sort(key=lambda r: int(r["i"]))  # Ray Data does not preserve order by default
    if [int(r["i"]) for r in rows] != list(range(len(paths))):
        raise RuntimeError(f"shard stage returned {len(rows)} results for {len(paths)} shards")
    return [pickle.loads(r["result"]) for r in rows]


def collect_shards(paths: list[str], fn: IndexFn, engine: str = "auto", *, label: str = "index",
                   num_cpus: float = 1) -> list:
    """`fn(sample)` over every sample of every shard -> the non-None results, in shard/sample order.

    Results come back to the driver: keep them small (what the global structures need)."""
    engine = resolve_engine(engine)
    paths = [str(p) for p in paths]
    print(f"[contrastlab] {label}: {len(paths)} shards ({engine})", flush=True)
    per_shard = _run_per_shard(paths, lambda i, path, _ctx: _collect_one(path, fn), None, engine, num_cpus)
    return [r for shard in per_shard for r in shard]


def map_shards(paths: list[str], out_dir, prefix: str, fn: BuildFn, context=None, engine: str = "auto", *,
               label: str = "map", num_cpus: float = 1) -> list[str]:
    """One output shard per input shard: `out_dir/<prefix>-<i:05d>.tar` holds `fn(sample, context)`
    for each sample of input shard i, in order; then `<prefix>.manifest.json`. Returns the output paths.

    `context` is read-only shared state (under ray it is `ray.put` once and deserialised per task,
    so mutations are neither shared nor kept). Output keys must be unique within a shard."""
    engine = resolve_engine(engine)
    paths = [str(p) for p in paths]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = _staging_dir(out_dir, prefix)
    shutil.rmtree(staging, ignore_errors=True)  # leftovers of a crashed run
    print(f"[contrastlab] {label}: {len(paths)} shards -> {out_dir}/ ({engine})", flush=True)

    def task(i: int, path: str, ctx) -> int:
        return _map_one(i, path, str(out_dir), prefix, fn, ctx)

    counts = _run_per_shard(paths, task, context, engine, num_cpus)
    shutil.rmtree(staging, ignore_errors=True)
    out_paths = [str(out_dir / shard_name(prefix, i)) for i in range(len(paths))]
    write_manifest(out_dir, prefix, out_paths, [int(c) for c in counts])
    return out_paths
