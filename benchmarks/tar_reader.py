"""Tar reading benchmark: samples/s of the platform's shard reader (`reader.iter_tar_samples` over
`data/tar_stream.py`) against webdataset's own tar iteration (`tar_file_expander` + `group_by_keys`,
what `webdataset.WebDataset` runs, built on Python's `tarfile`) and against `tarfile`'s stream mode
grouped by key (the platform's reader before 2026-12-07). One process, the same shards, same run.

Shards: JPEG + json samples at 64 px and 224 px (`write_photo_shards`, as ingest.py), plus a
caption-sized set (jpg + txt + json, three members). Each round reads every shard set once with each
reader, in alternated order (ABC, BCA, CAB, ...), from files on disk (the page cache holds them after
the first read, so this times parsing, not the disk). Each figure is the median over rounds.

    python benchmarks/tar_reader.py --quick --out results/tar_reader_quick.json
    python benchmarks/tar_reader.py --out results/tar_reader.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, print_table, write_photo_shards, write_report  # noqa: E402

from contrastlab.platform.data.reader import iter_tar_samples  # noqa: E402


def read_platform(paths: list[str]) -> int:
    n = 0
    for p in paths:
        with open(p, "rb") as fh:
            n += sum(1 for _ in iter_tar_samples(fh, p, "raise"))
    return n


def read_webdataset(paths: list[str]) -> int:
    from webdataset.tariterators import group_by_keys, tar_file_expander

    n = 0
    for p in paths:
        with open(p, "rb") as fh:
            n += sum(1 for _ in group_by_keys(tar_file_expander([{"url": p, "stream": fh}])))
    return n


def read_tarfile(paths: list[str]) -> int:
    """The platform's reader before data/tar_stream.py: tarfile's stream mode, members grouped by key."""
    n = 0
    for p in paths:
        with open(p, "rb") as fh, tarfile.open(fileobj=fh, mode="r|*") as tar:
            key = None
            for info in tar:
                if not info.isreg():
                    continue
                tar.extractfile(info).read()
                k = info.name.rsplit(".", 1)[0] if "." in info.name else info.name
                if k != key:
                    n, key = n + 1, k
    return n


READERS = {"platform": read_platform, "webdataset": read_webdataset, "tarfile": read_tarfile}


def write_caption_shards(directory: str, n: int, per_shard: int) -> list[str]:
    from contrastlab.platform.data.codecs import encode_jpeg
    from contrastlab.platform.data.shards import write_shards
    from _common import photo_crops

    samples = ((f"{i:07d}", {"jpg": encode_jpeg(img), "txt": f"a photo, crop {i} of two sample images", "json": {"index": i}})
               for i, img in enumerate(photo_crops(n, 64, seed=7)))
    return write_shards(samples, directory, prefix="cap", maxcount=per_shard)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--rounds", type=int, default=0, help="0: 3 quick, 7 full")
    args = ap.parse_args()
    n = 3000 if args.quick else 12000
    rounds = args.rounds or (3 if args.quick else 7)
    work = tempfile.mkdtemp(prefix="bench_tar_")
    sets = {
        "jpg+json 64px": write_photo_shards(os.path.join(work, "s64"), n, 64, per_shard=1000, seed=64),
        "jpg+json 224px": write_photo_shards(os.path.join(work, "s224"), n // 4, 224, per_shard=250, seed=224),
        "jpg+txt+json 64px": write_caption_shards(os.path.join(work, "cap"), n, per_shard=1000),
    }
    for paths in sets.values():  # into the page cache
        read_platform(paths)
    names = list(READERS)
    times: dict[str, dict[str, list[float]]] = {s: {r: [] for r in names} for s in sets}
    counts: dict[str, dict[str, int]] = {s: {} for s in sets}
    for i in range(rounds):
        order = names[i % len(names):] + names[: i % len(names)]
        for s, paths in sets.items():
            for r in order:
                t0 = time.perf_counter()
                counts[s][r] = READERS[r](paths)
                times[s][r].append(time.perf_counter() - t0)
    results, rows = {}, []
    for s in sets:
        if len(set(counts[s].values())) != 1:
            raise SystemExit(f"readers disagree on the number of samples in {s}: {counts[s]}")
        samples = counts[s]["platform"]
        rate = {r: samples / statistics.median(times[s][r]) for r in names}
        results[s] = {"samples": samples, "samples_per_s": rate, "us_per_sample": {r: 1e6 / rate[r] for r in names},
                      "speedup_vs_webdataset": rate["platform"] / rate["webdataset"], "speedup_vs_tarfile": rate["platform"] / rate["tarfile"]}
        rows.append({"set": s, "samples": samples, **{f"{r} us/sample": 1e6 / rate[r] for r in names},
                     "x webdataset": results[s]["speedup_vs_webdataset"], "x tarfile": results[s]["speedup_vs_tarfile"]})
    print_table(rows, list(rows[0]))
    write_report(args.out, {"benchmark": "tar_reader", "quick": args.quick, "machine": machine(),
                            "settings": {"rounds": rounds, "samples": n}, "results": results})


if __name__ == "__main__":
    main()
