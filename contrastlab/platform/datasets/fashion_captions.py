"""`fashion-captions`: real Fashion-MNIST product images with templated captions.

Images are upscaled (default 32 px, bilinear) and written as RGB JPEG; captions fill a random
template with a random synonym of the class name ("a product photo of a tee.", "a pair of
slacks, a clothing item."). train = the first n_train images of the official train set,
test = the first n_test of the official test set; `index` is the official position (test
offset by 60,000), unique across splits. Zero-shot task "class" over the ten class names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contrastlab.platform.data.codecs import encode_jpeg

from ._common import DatasetSpec, check_count, fill_prompts, resize_batch, sample_key, with_article, write_split
from .fashion_mnist import CLASSES, TEST_INDEX_OFFSET, load_subset, resolve_fashion_sources

# zero-shot class names, index = label
CLASSNAMES = ["t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
# words a caption may use for each class (first = the zero-shot class name)
SYNONYMS: dict[str, list[str]] = {
    "t-shirt": ["t-shirt", "tee", "top", "t-shirt top"],
    "pair of trousers": ["pair of trousers", "pair of pants", "pair of slacks", "pair of jeans"],
    "pullover": ["pullover", "sweater", "jumper"],
    "dress": ["dress", "gown", "frock"],
    "coat": ["coat", "jacket", "overcoat"],
    "sandal": ["sandal", "summer sandal", "open shoe"],
    "shirt": ["shirt", "button-up shirt", "blouse"],
    "sneaker": ["sneaker", "trainer", "running shoe"],
    "bag": ["bag", "handbag", "purse"],
    "ankle boot": ["ankle boot", "boot", "short boot"],
}
CAPTION_TEMPLATES = [
    "{item}.",
    "a photo of {item}.",
    "a product photo of {item}.",
    "a small grey picture of {item}.",
    "{item} on a black background.",
    "a catalogue image showing {item}.",
    "{item}, a fashion item.",
]
ZERO_SHOT_TEMPLATES = ["a photo of a {}.", "a product photo of a {}.", "a small grey picture of a {}.", "a catalogue image showing a {}."]


def make_caption(label: int, rng: np.random.Generator) -> str:
    words = SYNONYMS[CLASSNAMES[label]]
    item = with_article(words[rng.integers(len(words))])
    text = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(item=item)
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text  # some capitalised, like real captions


def _samples(split: str, images: np.ndarray, labels: np.ndarray, first_index: int, rng: np.random.Generator):
    for i, (image, label) in enumerate(zip(images, labels)):
        index, label = first_index + i, int(label)
        caption = make_caption(label, rng)
        rgb = np.repeat(image[:, :, None], 3, axis=2)
        yield sample_key(index), {
            "jpg": encode_jpeg(rgb),
            "txt": caption,
            "json": {"caption": caption, "index": index, "split": split, "label": label, "class": CLASSNAMES[label]},
        }


def generate(out_dir: Path, *, seed: int, n_train: int, n_test: int, image_size: int, resize: str):
    check_count("image_size", image_size, 8, 512)
    splits = {}
    for stream, (split, n, offset) in enumerate((("train", n_train, 0), ("test", n_test, TEST_INDEX_OFFSET))):
        images, labels = load_subset(split, n)
        images = resize_batch(images, image_size, resize)
        rng = np.random.default_rng([seed, stream])
        splits[split] = write_split(out_dir, split, _samples(split, images, labels, offset, rng), len(images), "fashion-captions")
    task = {"classnames": CLASSNAMES, "templates": ZERO_SHOT_TEMPLATES, "label_field": "label",
            "prompts": fill_prompts(ZERO_SHOT_TEMPLATES, CLASSNAMES)}
    meta = {"classes": CLASSES, "classnames": CLASSNAMES, "zero_shot": {"class": task}, "synonyms": SYNONYMS,
            "image_size": image_size, "modality": "image-text"}
    return splits, meta


SPEC = DatasetSpec(
    name="fashion-captions",
    description="real Fashion-MNIST images (RGB JPEG, upscaled) with templated synonym captions; zero-shot over 10 classes",
    defaults={"n_train": 10000, "n_test": 2000, "image_size": 32, "resize": "bilinear"},
    choices={"resize": ("bilinear", "nearest")},
    generate=generate,
    resolve=resolve_fashion_sources,  # the Fashion-MNIST files read are part of the cache key
)
