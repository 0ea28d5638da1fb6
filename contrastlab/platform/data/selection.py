"""Per-epoch selection of the training samples a method wants (e.g. one domain per phase, plus a buffer).

A method with phases often trains on part of its data at a time: UCR trains on one domain per
phase plus a rehearsal buffer of earlier domains' samples. Without a selection the loader would
decode and augment every sample of every domain each epoch for the method to throw most away.
With it, the read tasks drop unselected samples right after reading the tar members (only the
small json is decoded), so decoding, augmentation and the batch slots go to selected samples.

A method returns a `DataSelection` from `train_selection(ctx)`; the loop calls it at the start of
every epoch (after `on_epoch_start`) and hands it to the reader (through the run's RunState actor on
Ray, directly in the in-process loop). A sample whose json `field` is one of `values` is kept
`value_copies` times in expectation (1 by default; more to give an epoch a fixed number of steps, fewer
to thin it); a sample whose stable index is in `indices` (e.g. a rehearsal buffer) is kept
`index_copies` times in expectation. Fractional copies are floor + a Bernoulli draw keyed by seed,
epoch and key, as in mixing.py (each copy gets its own augmentation); the two factors let a method
set both streams' sizes, e.g. as many buffered rows as new ones. Evaluation splits are never filtered.
"""
from __future__ import annotations

import math
import zlib
import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DataSelection:
    field: str = ""  # json field to filter on; "" = every sample matches
    values: tuple = ()  # kept values of `field`
    indices: tuple = ()  # extra stable sample indices to keep (e.g. a rehearsal buffer)
    index_copies: float = 1.0  # expected copies per epoch of each sample kept through `indices`
    value_copies: float = 1.0  # expected copies per epoch of each sample matched by `field`/`values`
    _index_set: frozenset = dataclasses.field(default=frozenset(), compare=False, repr=False)

    def __post_init__(self):
        for name in ("index_copies", "value_copies"):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise ValueError(f"DataSelection.{name} must be finite and >= 0, got {value}")
        object.__setattr__(self, "values", tuple(self.values))
        object.__setattr__(self, "indices", tuple(int(i) for i in self.indices))
        object.__setattr__(self, "_index_set", frozenset(self.indices))

    def to_dict(self) -> dict:
        return {"field": self.field, "values": list(self.values), "indices": list(self.indices),
                "index_copies": self.index_copies, "value_copies": self.value_copies}

    @classmethod
    def from_dict(cls, d: dict | None) -> "DataSelection | None":
        if not d:
            return None
        return cls(d.get("field", ""), tuple(d.get("values", ())), tuple(d.get("indices", ())),
                   float(d.get("index_copies", 1.0)), float(d.get("value_copies", 1.0)))

    def copies(self, meta: dict | None, index: int, key: str, seed: int, epoch: int) -> int:
        """How many times a sample (its decoded json `meta`, stable `index`) appears this epoch."""
        if not self.field or (meta is not None and meta.get(self.field) in self.values):
            return _draw(self.value_copies, key, seed, epoch, salt=8209)
        if index not in self._index_set:
            return 0
        return _draw(self.index_copies, key, seed, epoch, salt=8191)

    def describe(self) -> str:
        what = f"{self.field} in {list(self.values)}" if self.field else "all samples"
        if self.value_copies != 1.0:
            what += f" x{self.value_copies:.2f}"
        extra = f" + {len(self.indices)} indexed sample(s) x{self.index_copies:.2f}" if self.indices else ""
        return what + extra


def _draw(expected: float, key: str, seed: int, epoch: int, salt: int) -> int:
    """floor(expected) copies, plus one with probability frac(expected), the same on every reader."""
    whole = int(math.floor(expected))
    frac = expected - whole
    if frac <= 0:
        return whole
    u = np.random.default_rng([seed, epoch, salt, zlib.crc32(key.encode())]).random()
    return whole + int(u < frac)
