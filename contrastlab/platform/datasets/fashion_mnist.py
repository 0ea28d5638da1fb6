"""Fashion-MNIST from the Debian package `dataset-fashion-mnist`, and the `fashion-mnist` dataset.

`load_fashion_mnist(split)` reads the gzipped idx files that the package installs under
/usr/share/datasets/fashion-mnist/ (override with $CONTRASTLAB_FASHION_MNIST_DIR or `root=`).
The embedded datasets built from them key their cache on a digest of the files read
(`fashion_mnist_digest`), so another folder's files never reuse a dataset made from these.

`fashion-mnist`: labelled 28 px grey JPEGs for clustering / self-supervised methods;
train = the first n_train images of the official train set (default all 60,000), test = the
first n_test of the official test set (default all 10,000). A sample's `index` is its position
in the official order, test images offset by 60,000, so indices are unique across splits and
stay the same whatever n_train / n_test are.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg

from ._common import DatasetSpec, check_count, file_digest, resize_batch, sample_key, write_split

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
OFFICIAL_SIZES = {"train": 60000, "test": 10000}
TEST_INDEX_OFFSET = 60000
_FILE_PREFIX = {"train": "train", "test": "t10k"}
_INSTALL_HINT = "install it with `sudo apt-get install dataset-fashion-mnist` (or `make setup`)"


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get("CONTRASTLAB_FASHION_MNIST_DIR") or FASHION_MNIST_DIR)


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """idx format: big-endian magic (0x0000 0803 for uint8 3-D, 0801 for 1-D), one uint32 per dim, then the data."""
    if not path.is_file():
        raise FileNotFoundError(f"Fashion-MNIST file {path} not found: the Debian package dataset-fashion-mnist provides it; {_INSTALL_HINT}")
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected_magic:
        raise ValueError(f"{path}: not an idx file of the expected kind (magic {magic:#010x}, expected {expected_magic:#010x})")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated idx file ({array.size} values for shape {shape})")
    return array.reshape(shape)


def load_fashion_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Official `train` (60,000) or `test` (10,000, alias `t10k`) split: (uint8 images (N, 28, 28), int64 labels (N,))."""
    split = {"t10k": "test"}.get(split, split)
    if split not in _FILE_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    base = Path(root) if root is not None else fashion_mnist_dir()
    prefix = _FILE_PREFIX[split]
    images = _read_idx(base / f"{prefix}-images-idx3-ubyte.gz", 0x00000803)
    labels = _read_idx(base / f"{prefix}-labels-idx1-ubyte.gz", 0x00000801).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{base}: {len(images)} images but {len(labels)} labels in split {split}")
    return images.copy(), labels  # copy: frombuffer views are read-only


def fashion_mnist_digest(splits=("train", "test"), root: str | os.PathLike | None = None) -> str:
    """Short content digest of the idx files of `splits` (what $CONTRASTLAB_FASHION_MNIST_DIR or the
    Debian package provides), for the cache keys of the datasets built from them. Raises
    FileNotFoundError (with the install hint) when one is missing."""
    base = Path(root) if root is not None else fashion_mnist_dir()
    files = [base / f"{_FILE_PREFIX[s]}-{kind}-idx{dim}-ubyte.gz" for s in splits for kind, dim in (("images", 3), ("labels", 1))]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"Fashion-MNIST file {path} not found: the Debian package dataset-fashion-mnist provides it; {_INSTALL_HINT}")
    return file_digest(*files)


def resolve_fashion_sources(params: dict) -> tuple[dict, dict]:
    """`DatasetSpec.resolve` of the datasets built from Fashion-MNIST: the files read are part of the cache key."""
    return params, {"fashion_mnist": fashion_mnist_digest()}


def load_subset(split: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    check_count(f"n_{split}", n, 0, OFFICIAL_SIZES[split])
    images, labels = load_fashion_mnist(split)
    return images[:n], labels[:n]


def _samples(split: str, images: np.ndarray, labels: np.ndarray, first_index: int, quality: int):
    for i, (image, label) in enumerate(zip(images, labels)):
        index = first_index + i
        yield sample_key(index), {"jpg": encode_jpeg(image, quality=quality), "json": {"label": int(label), "index": index, "split": split}}


def generate(out_dir: Path, *, seed: int, n_train: int, n_test: int, image_size: int, resize: str, jpeg_quality: int):
    # seed is unused (the data is fixed) but stays in the cache key like for every dataset
    check_count("image_size", image_size, 8, 512)
    check_count("jpeg_quality", jpeg_quality, 1, 100)
    splits = {}
    for split, n, offset in (("train", n_train, 0), ("test", n_test, TEST_INDEX_OFFSET)):
        images, labels = load_subset(split, n)
        images = resize_batch(images, image_size, resize)
        splits[split] = write_split(out_dir, split, _samples(split, images, labels, offset, jpeg_quality), len(images), "fashion-mnist")
    meta = {"classes": CLASSES, "image_size": image_size, "channels": 1, "source": str(fashion_mnist_dir()), "modality": "image-labels"}
    return splits, meta


SPEC = DatasetSpec(
    name="fashion-mnist",
    description="real Fashion-MNIST (Debian dataset-fashion-mnist) as labelled grey JPEG shards, 10 classes",
    defaults={"n_train": 60000, "n_test": 10000, "image_size": 28, "resize": "bilinear", "jpeg_quality": 95},
    choices={"resize": ("bilinear", "nearest")},
    generate=generate,
    resolve=resolve_fashion_sources,  # $CONTRASTLAB_FASHION_MNIST_DIR may point at other files: key on their digest
)
