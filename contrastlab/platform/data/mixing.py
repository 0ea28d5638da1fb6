"""Weighted mixing of several training sources (e.g. image-text pairs, text-only, image-only shards).

A run's `data.train` may name several sources separated by ';', and `data.train_weights` gives
their sampling weights ("2:1:1"). An epoch then holds `samples_per_epoch` samples (default: the
sources' total), of which source i contributes w_i / sum(w) in expectation, whatever its size:
a small source is repeated, a large one thinned.

How: every sample of source i is emitted `m` times, m = floor(r_i) + Bernoulli(frac(r_i)), with
r_i = samples_per_epoch * w_i / sum(w) / n_i its sampling rate. The coin is a function of
(run seed, epoch, source, sample key), so the draw is the same wherever the sample is read (any
read task, any worker, the in-process loop), differs between epochs (a thinned source shows a new
subset each epoch), and needs no coordination between the tasks that read different shards. This
is sampling without a global shuffle: proportions hold per epoch in expectation; within a batch
they come from shard-order shuffling plus the worker's local shuffle buffer, as with any shards.

Repeats of a sample get different augmentation (the repeat number enters the sample's RNG) and
every emitted row gets a `source` column (the source's position in `data.train`), so a method can
treat the streams differently.
"""
from __future__ import annotations

import math
import os
import zlib
from dataclasses import dataclass

import numpy as np


class MixError(ValueError):
    """A `data.train` / `data.train_weights` combination that cannot be mixed."""


def split_sources(train: str) -> list[str]:
    """`data.train` -> one shard pattern per source (';' separates sources, ',' patterns within one)."""
    return [part.strip() for part in str(train).split(";") if part.strip()]


def parse_weights(weights: str, n_sources: int) -> list[float]:
    """"2:1:1" -> [2.0, 1.0, 1.0]; "" -> every source weighted by its size (None returned as [])."""
    if not str(weights).strip():
        return []
    try:
        parts = [float(x) for x in str(weights).split(":")]
    except ValueError:
        raise MixError(f"data.train_weights must be numbers separated by ':' (e.g. '2:1:1'), got {weights!r}") from None
    if len(parts) != n_sources:
        raise MixError(f"data.train_weights {weights!r} has {len(parts)} weight(s) but data.train names {n_sources} source(s) "
                       f"(separate sources with ';'); give one weight per source")
    if min(parts) < 0 or sum(parts) <= 0 or not all(math.isfinite(p) for p in parts):
        raise MixError(f"data.train_weights {weights!r}: weights must be finite, >= 0 and not all 0")
    return parts


def _norm(path: str) -> str:
    """A path as Ray's file datasource may hand it back: scheme stripped, local paths absolute."""
    if "://" in path:
        return path.split("://", 1)[1]
    return os.path.realpath(path)


@dataclass
class MixPlan:
    """Which source each shard belongs to and the source's sampling rate (expected copies per sample)."""

    shard_source: dict[str, int]
    rates: list[float]
    counts: list[int]
    weights: list[float]
    epoch_size: int

    @classmethod
    def build(cls, sources: list[list[str]], counts: list[int], weights: list[float], epoch_size: int = 0) -> "MixPlan":
        if len(sources) != len(counts) or len(sources) != len(weights):
            raise MixError(f"{len(sources)} sources, {len(counts)} counts and {len(weights)} weights: need one of each per source")
        for i, n in enumerate(counts):
            if n <= 0 and weights[i] > 0:
                raise MixError(f"training source {i} ({sources[i][0] if sources[i] else 'no shards'}) has no samples "
                               f"but weight {weights[i]:g}: give it weight 0 or point it at shards with samples")
        epoch_size = int(epoch_size or sum(counts))
        total = sum(weights)
        rates = [epoch_size * w / total / n if n > 0 else 0.0 for w, n in zip(weights, counts)]
        shard_source: dict[str, int] = {}
        for i, paths in enumerate(sources):
            for p in paths:
                if _norm(p) in shard_source and shard_source[_norm(p)] != i:
                    raise MixError(f"shard {p} is listed in training sources {shard_source[_norm(p)]} and {i}: a shard can "
                                   f"belong to one source only")
                shard_source[_norm(p)] = i
        return cls(shard_source, rates, list(counts), list(weights), epoch_size)

    def source_of(self, shard: str) -> int:
        try:
            return self.shard_source[_norm(shard)]
        except KeyError:
            for path, src in self.shard_source.items():  # a filesystem may return a path with another prefix
                if path.endswith(shard) or shard.endswith(path):
                    return src
            raise MixError(f"shard {shard} belongs to none of the training sources") from None

    def copies(self, source: int, key: str, seed: int, epoch: int) -> int:
        """How many times this sample appears in this epoch (0 = not this epoch)."""
        rate = self.rates[source]
        whole, frac = int(math.floor(rate)), rate - math.floor(rate)
        if frac <= 0:
            return whole
        u = np.random.default_rng([seed, epoch, 4099, source, zlib.crc32(key.encode())]).random()
        return whole + int(u < frac)

    def describe(self) -> str:
        parts = [f"source {i}: {n} samples, weight {w:g} -> {r * n:.0f} per epoch (x{r:.2f})"
                 for i, (n, w, r) in enumerate(zip(self.counts, self.weights, self.rates))]
        return f"mixing {len(self.counts)} training sources into {self.epoch_size} samples per epoch: " + "; ".join(parts)
