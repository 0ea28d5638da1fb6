"""Offline BPE tokenizer: CLIP's byte-pair vocabulary (shipped inside the open-clip-torch wheel)
plus a `<|mask|>` token for masked language modelling.

Id layout follows DeCLIP: the 49,406 BPE tokens keep their ids, `<|mask|>` takes 49,406 and the
start/end-of-text tokens move up to 49,407/49,408 (vocab 49,409). The mask id stays below SOT/EOT
so pooling at the EOT position found by `argmax(ids)` still works. Padding is 0, as in CLIP.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

BPE_TOKENS = 49406
MASK_ID, SOT_ID, EOT_ID, PAD_ID = 49406, 49407, 49408, 0
VOCAB_SIZE = 49409


@lru_cache(maxsize=1)
def _simple_tokenizer():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class BPETokenizer:
    pad_id, mask_id, sot_id, eot_id, vocab_size = PAD_ID, MASK_ID, SOT_ID, EOT_ID, VOCAB_SIZE

    def __init__(self, context_length: int = 77):
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (SOT, a token, EOT), got {context_length}")
        self.context_length = context_length
        self._bpe = _simple_tokenizer()

    # Pickled as its context length alone: the BPE tables (2 MiB) are rebuilt from the wheel's vocabulary
    # file, once per process (`_simple_tokenizer` is cached), instead of travelling inside every Ray Data
    # read function that tokenizes captions (Ray warned "serialized size of read_task_fn is 2.0MiB").
    def __getstate__(self) -> dict:
        return {"context_length": self.context_length}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["context_length"])

    @property
    def special_ids(self) -> tuple[int, int, int]:
        return (self.pad_id, self.sot_id, self.eot_id)

    def encode(self, texts: list[str] | np.ndarray) -> np.ndarray:
        """Texts -> (N, context_length) int64: SOT, BPE ids (truncated), EOT, zero padding."""
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [i for i in self._bpe.encode(str(text)) if i < BPE_TOKENS][: self.context_length - 2]
            out[row, : len(ids) + 2] = [self.sot_id, *ids, self.eot_id]
        return out

    def decode(self, ids: np.ndarray) -> str:
        pieces = []
        for i in np.asarray(ids).tolist():
            if i == self.eot_id:
                break
            if i in (self.sot_id, self.pad_id):
                continue
            if i == self.mask_id:
                pieces.append("<|mask|></w>")
            else:
                pieces.append(bytearray(self._bpe.byte_decoder[c] for c in self._bpe.decoder[i]).decode("utf-8", "replace"))
        return "".join(pieces).replace("</w>", " ").strip()
