"""Shared helpers for the dataset tests: read shards back with the standard `tarfile` module."""
from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from pathlib import Path

import pytest


def read_shards(paths: list[str]) -> dict[str, dict[str, bytes]]:
    """key -> {ext: raw bytes} for every member of the given tar shards (keys must not repeat)."""
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                assert ext not in samples[key], f"duplicate member {member.name}"
                samples[key][ext] = tar.extractfile(member).read()
    return dict(samples)


def read_jsons(paths: list[str]) -> list[dict]:
    return [json.loads(fields["json"]) for fields in read_shards(paths).values()]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """relative path -> bytes of every file below root (for byte-identity checks)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def shards():
    class _Helpers:
        read = staticmethod(read_shards)
        jsons = staticmethod(read_jsons)
        tree = staticmethod(tree_bytes)

    return _Helpers
