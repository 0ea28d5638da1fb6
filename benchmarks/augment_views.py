"""Augmentation benchmark: views/s of the platform's CPU views (`data/augment.py`, OpenCV) against
torchvision's transforms doing the same recipe, one process, one thread, same images, same run.

Recipes (uint8 HxWx3 in, uint8 CxHxW out, the form a Ray Data task hands to the Train worker):
- moco: MoCo-v2 "aug+" as DeCLIP and IFND use it: RandomResizedCrop(scale 0.2-1), ColorJitter(0.4,
        0.4, 0.4, 0.1) p=0.8, grey p=0.2, Gaussian blur sigma U(0.1, 2) p=0.5, flip.
- crop: RandomResizedCrop(scale 0.2-1) + flip (CLIP's train view).

Pipelines:
- contrastlab:    `augment.moco_v2_view` / `random_resized_crop` + `hflip`, then `to_chw`.
- tv_pil:         torchvision.transforms on PIL images, the MoCo-v2 reference code's way (its blur is
                  PIL's GaussianBlur(radius=sigma)); the PIL image is made before the clock starts,
                  as a PIL decoder would hand it over; ends with PILToTensor.
- tv_tensor:      torchvision.transforms.v2 on uint8 CHW tensors (GaussianBlur kernel 13 = the
                  platform's largest, 2*ceil(3*2)+1).
- contrastlab_read_half (MoCo-v2 only): what stays in a read task under data.photometric=device
                  (crop, flip and the draws; `moco_v2_view(photometric="device")`); beside it, the
                  views/s of `device_views.apply_photometric` finishing a batch of 128 on the GPU if
                  there is one, else on this CPU (`finish_on_device`).
Images: random square crops of sklearn's two sample photos at 64 px and 224 px, plus 448 px sources
viewed at 224 px (shrinking crops, the ImageNet-like case). Rounds alternate the pipeline order
(ABC, BCA, CAB, ...); each figure is the median over rounds; `speedup_vs_tv_pil` is contrastlab's
views/s over torchvision-on-PIL's in the same run.

    python benchmarks/augment_views.py --quick --out results/augment_views_quick.json
    python benchmarks/augment_views.py --out results/augment_views.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, photo_crops, print_table, write_report  # noqa: E402

from contrastlab.platform.data import augment as A  # noqa: E402


class PILGaussianBlur:
    """The MoCo-v2 reference blur: PIL's GaussianBlur with radius ~ U(sigma)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        import random

        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def torchvision_pipelines(recipe: str, size: int):
    import torch
    import torchvision.transforms as T
    import torchvision.transforms.v2 as T2

    if recipe == "moco":
        pil = T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                         T.RandomGrayscale(p=0.2), T.RandomApply([PILGaussianBlur()], p=0.5), T.RandomHorizontalFlip(), T.PILToTensor()])
        tensor = T2.Compose([T2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True), T2.RandomApply([T2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                             T2.RandomGrayscale(p=0.2), T2.RandomApply([T2.GaussianBlur(13, sigma=(0.1, 2.0))], p=0.5), T2.RandomHorizontalFlip()])
    else:
        pil = T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), T.PILToTensor()])
        tensor = T2.Compose([T2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True), T2.RandomHorizontalFlip()])
    torch.manual_seed(0)
    return pil, tensor


def platform_view(recipe: str, size: int, photometric: str = "reader"):
    def view(img, rng):
        if recipe == "moco":
            return A.to_chw(A.moco_v2_view(img, size, rng, photometric=photometric))
        return A.to_chw(A.hflip(A.random_resized_crop(img, size, rng, scale=(0.2, 1.0)), rng))

    return view


def finish_rate(images, size: int, rounds: int, batch: int = 128) -> dict:
    """Views/s of `device_views.apply_photometric` finishing a batch of deferred views: on the GPU when
    there is one (what data.photometric=device is for), else on this CPU (one thread)."""
    import torch

    from contrastlab.platform.data.device_views import apply_photometric

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(1)
    deferred = [A.to_chw(A.moco_v2_view(images[i % len(images)], size, rng, photometric="device")) for i in range(batch)]
    pixels = torch.from_numpy(np.stack([d.pixels for d in deferred])).to(device)
    params = torch.from_numpy(np.stack([d.params for d in deferred])).to(device)
    apply_photometric(pixels, params)  # warm-up
    best = 0.0
    for _ in range(max(1, rounds)):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        apply_photometric(pixels, params)
        if device == "cuda":
            torch.cuda.synchronize()
        best = max(best, batch / (time.perf_counter() - t0))
    return {"device": device, "batch": batch, "views_per_s": best}


def time_views(fn, inputs, views_per_image: int = 2) -> float:
    t0 = time.perf_counter()
    for x in inputs:
        for _ in range(views_per_image):
            fn(x)
    return len(inputs) * views_per_image / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=0, help="alternated rounds (0: 3 quick, 5 full)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    rounds = args.rounds or (3 if args.quick else 5)
    cases = [(64, 64), (224, 224), (448, 224)]  # (source px, view px)
    n_for = {64: 300, 224: 60, 448: 40} if args.quick else {64: 1500, 224: 300, 448: 200}
    report = {"benchmark": "augment_views", "quick": args.quick, "machine": machine(),
              "settings": {"rounds": rounds, "images": {str(k): v for k, v in n_for.items()}, "views_per_image": 2,
                           "threads": 1, "opencv": A.cv2.__version__}, "results": {}}
    rows = []
    for recipe in ("moco", "crop"):
        for src, size in cases:
            images = list(photo_crops(n_for[src], src, seed=1))
            pils = [Image.fromarray(x) for x in images]
            tensors = [torch.from_numpy(A.to_chw(x)) for x in images]
            tv_pil, tv_tensor = torchvision_pipelines(recipe, size)
            ours = platform_view(recipe, size)
            rng = np.random.default_rng(0)
            runs = {"contrastlab": (lambda x: ours(x, rng), images), "tv_pil": (tv_pil, pils), "tv_tensor": (tv_tensor, tensors)}
            if recipe == "moco":  # data.photometric=device: what stays in the read task (crop, flip, the draws)
                deferred = platform_view(recipe, size, photometric="device")
                runs["contrastlab_read_half"] = (lambda x: deferred(x, rng), images)
            names = list(runs)
            rates = {k: [] for k in names}
            for fn, inputs in runs.values():
                time_views(fn, inputs[:10])  # warm-up: imports, first-call caches
            for r in range(rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    fn, inputs = runs[name]
                    rates[name].append(time_views(fn, inputs))
            med = {k: statistics.median(v) for k, v in rates.items()}
            key = f"{recipe}_{src}to{size}px"
            report["results"][key] = {"views_per_s": med, "rounds": rates, "images": len(images),
                                      "speedup_vs_tv_pil": med["contrastlab"] / med["tv_pil"],
                                      "speedup_vs_tv_tensor": med["contrastlab"] / med["tv_tensor"]}
            if recipe == "moco":
                report["results"][key]["read_half_speedup"] = med["contrastlab_read_half"] / med["contrastlab"]
                report["results"][key]["finish_on_device"] = finish_rate(images, size, rounds)
            rows.append({"recipe": recipe, "source -> view": f"{src} -> {size}", "contrastlab views/s": med["contrastlab"],
                         "tv PIL views/s": med["tv_pil"], "tv v2 tensor views/s": med["tv_tensor"],
                         "x tv PIL": med["contrastlab"] / med["tv_pil"], "x tv tensor": med["contrastlab"] / med["tv_tensor"],
                         "read half views/s": med.get("contrastlab_read_half"),
                         "finish views/s": report["results"][key].get("finish_on_device", {}).get("views_per_s")})
            print(f"{key}: " + ", ".join(f"{k} {v:.0f}" for k, v in med.items()), flush=True)
    print_table(rows, list(rows[0]))
    write_report(args.out, report)


if __name__ == "__main__":
    main()
