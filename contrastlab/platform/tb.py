"""TensorBoard output from rank 0: scalars, images, embeddings.

Event files are written to a local directory; when the run's storage is a cloud URI the directory is
mirrored to `<storage>/<run>/tensorboard` at each epoch end (pyarrow filesystems), so
`tensorboard --logdir s3://...` or a local sync shows the run while it trains.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np


class TBLogger:
    def __init__(self, target: str | None, enabled: bool = True):
        self.enabled = enabled and target is not None
        self.target = target
        self.writer = None
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.remote = "://" in target and not target.startswith("file://")
        self.local_dir = tempfile.mkdtemp(prefix="contrastlab-tb-") if self.remote else os.path.expanduser(target)
        os.makedirs(self.local_dir, exist_ok=True)
        self.writer = SummaryWriter(self.local_dir)

    def scalars(self, values: dict, step: int, prefix: str = "") -> None:
        if not self.writer:
            return
        for k, v in values.items():
            if isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v):
                self.writer.add_scalar(f"{prefix}{k}", float(v), step)

    def images(self, tag: str, images, step: int) -> None:
        """images: (N, C, H, W) float in [0, 1] or uint8 (N, H, W, C)."""
        if not self.writer:
            return
        arr = np.asarray(images)
        if arr.dtype == np.uint8 and arr.ndim == 4 and arr.shape[-1] in (1, 3):
            self.writer.add_images(tag, arr, step, dataformats="NHWC")
        else:
            self.writer.add_images(tag, arr, step)

    def image(self, tag: str, image, step: int, dataformats: str = "HWC") -> None:
        if self.writer:
            self.writer.add_image(tag, np.asarray(image), step, dataformats=dataformats)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer:
            self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        if not self.writer:
            return
        self.writer.flush()
        if self.remote:
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(self.target)
            pafs.copy_files(self.local_dir, path, destination_filesystem=fs)

    def close(self) -> None:
        if self.writer:
            self.flush()
            self.writer.close()
            if self.remote:
                shutil.rmtree(self.local_dir, ignore_errors=True)
