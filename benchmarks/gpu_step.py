"""GPU step benchmark: one CLIP and one DeCLIP training step at ViT-B/32, batch 256, bf16.

Measures samples/s and peak GPU memory of:
- open_clip ViT-B-32:            the published open_clip implementation (`open_clip.create_model`,
                                 random init, `open_clip.loss.ClipLoss`, AdamW, bf16 autocast,
                                 logit-scale clamp as its training loop does), a bare torch loop;
- contrastlab CLIP, bare loop:   our CLIP towers and `clip_loss`, the maths of `CLIP.train_step`
                                 with no platform code (and no per-step host syncs);
- contrastlab CLIP, platform:    `train.build_context` + `train.run_epochs`, the loop every backend
                                 (Ray Train, run_local) shares, fed in-memory GPU batches;
- contrastlab DeCLIP, platform:  DeCLIP with all four signals at the card's ViT-B/32 sizes
                                 (`real_run_sets("ViT-B-32")`: 1024-d SimSiam heads, MLM head over
                                 49,409 tokens, 65,536-entry NN queue), two image views, masked
                                 and EDA captions, through the same loop.
All four see the same kind of batch (256 pairs of 224 px views and 77-token captions, made by the
methods' own CPU preprocessing from synthetic images once, then reused), so the figures are the
step's cost with ingest excluded; ingest has its own benchmark (ingest.py).

Reference figures printed beside ours: open_clip's docs/model_profile.csv gives ViT-B-32 151.28 M
parameters and 14.78 GFLOPs per image-text pair forward (8.82 image + 5.96 text); a training step is
about 3x the forward. Achieved TFLOP/s come from torch's FlopCounterMode over one real step of each
variant; the share of peak is against 989 TFLOP/s (dense bf16, H100/H200 SXM).

    python benchmarks/gpu_step.py --out benchmarks/results/gpu_step.json          # on a GPU
    python benchmarks/gpu_step.py --tiny --device cpu --steps 2 --warmup 1 --batch 4  # script check
"""
from __future__ import annotations

import argparse
import gc
import math
import statistics
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import loop_epoch, machine, print_table, write_report  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

OPEN_CLIP_PROFILE = {"model": "ViT-B-32", "mparams": 151.28, "gflops_forward": 14.78, "image_gflops": 8.82, "text_gflops": 5.96,
                     "source": "open_clip docs/model_profile.csv"}
PEAK_BF16_TFLOPS = 989.0  # H100/H200 SXM dense bf16
WORDS = ("a photo of the red blue green small large round square striped dotted cat dog car tree house "
         "bird boat on in next to under with two three some bright dark").split()


def clip_sets(tiny: bool) -> list[str]:
    if tiny:
        return []
    return ["method.image_tower=ViT-B-32", "method.text_tower=clip", "method.embed_dim=512",
            "method.image_size=224", "method.context_length=77"]


def declip_sets(tiny: bool) -> list[str]:
    from contrastlab.methods.declip.config import real_run_sets

    return [] if tiny else real_run_sets("ViT-B-32")


def synthetic_samples(n: int, size: int, seed: int = 0) -> list[dict]:
    """Smooth random colour images (upsampled 8x8 noise) and 10-16 word captions."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        low = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
        img = np.kron(low, np.ones((size // 8 + 1, size // 8 + 1, 1), np.float32))[:size, :size]
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        caption = " ".join(rng.choice(WORDS, rng.integers(10, 17)))
        out.append({"__key__": f"{i:06d}", "jpg": img, "txt": caption, "json": {"label": int(i % 10)}})
    return out


def preprocessed_batch(method_name: str, exp, samples: list[dict], device) -> dict:
    """The method's own training preprocessing over `samples`, collated to one batch on `device`."""
    from contrastlab.methods.registry import get_method

    fn, _ = get_method(method_name).make_preprocess(exp.method, "train", {})
    rng = np.random.default_rng(1)
    rows = [fn(s, rng) for s in samples]
    return {k: torch.from_numpy(np.stack([r[k] for r in rows])).to(device) for k in rows[0]}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Variant:
    """One variant's model and optimiser, kept resident so the timed rounds can interleave."""

    def __init__(self, name: str, device, build, step, batch: int, warmup: int):
        self.name, self.device, self.step_fn, self.batch = name, device, step, batch
        gc.collect()
        base = 0
        if device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        self.state = build()
        self.params = sum(p.numel() for p in self.state["params"])
        for _ in range(warmup):
            step(self.state, 1)
        sync(device)
        # Own peak: the peak while only this variant ran, less what the others already held.
        self.peak_gib = (torch.cuda.max_memory_allocated() - base) / 2**30 if device.type == "cuda" else None
        self.flops = None
        try:  # one more real step under the FLOP counter (counts matmuls/convs/attention)
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                step(self.state, 1)
            self.flops = counter.get_total_flops()
        except Exception as exc:  # noqa: BLE001 - a counter gap must not lose the timing
            print(f"[gpu_step] {name}: FLOP count failed ({exc})")
        self.rates: list[float] = []

    def time(self, steps: int) -> float:
        sync(self.device)
        t0 = time.perf_counter()
        self.step_fn(self.state, steps)
        sync(self.device)
        rate = self.batch * steps / (time.perf_counter() - t0)
        self.rates.append(rate)
        return rate

    def row(self) -> dict:
        rate = statistics.median(self.rates)
        row = {"variant": self.name, "samples/s": rate, "step_ms": 1000 * self.batch / rate, "params_M": self.params / 1e6,
               "rounds": len(self.rates), "spread": f"{min(self.rates):.0f}-{max(self.rates):.0f}"}
        if self.peak_gib is not None:
            row["peak_alloc_GiB"] = self.peak_gib
        if self.flops:
            row["GFLOP/step"] = self.flops / 1e9
            row["TFLOP/s"] = self.flops * rate / self.batch / 1e12
            row["share_of_peak"] = row["TFLOP/s"] / PEAK_BF16_TFLOPS
        return row


# --------------------------------------------------------------------------- variants
def open_clip_variant(batch: dict, device, tiny: bool):
    import open_clip
    from open_clip.loss import ClipLoss

    def build():
        model = open_clip.create_model("ViT-B-32" if not tiny else "ViT-S-32", pretrained=None).to(device)
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
        return {"model": model, "opt": opt, "loss": ClipLoss(), "params": list(model.parameters())}

    from contrastlab.platform.data.augment import normalize_batch

    images = batch["image"]
    text = batch["text"].clamp(max=49407)  # open_clip's vocabulary is 49,408 (ours adds <|mask|>)
    if tiny:  # ViT-S-32 wants 224 px; the tiny batch has 48 px crops
        images = torch.nn.functional.interpolate(images.float(), size=224).round().to(torch.uint8)
        text = torch.nn.functional.pad(text, (0, 77 - text.shape[1]))  # and 77-token captions

    def step(state, n):
        model, opt, loss_fn = state["model"], state["opt"], state["loss"]
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(normalize_batch(images), text)
                img, txt, scale = (out["image_features"], out["text_features"], out["logit_scale"]) if isinstance(out, dict) else out[:3]
                loss = loss_fn(img, txt, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))

    return build, step


def clip_bare_variant(exp, batch: dict, device):
    from contrastlab.methods.clip.loss import clip_loss
    from contrastlab.methods.clip.method import CLIP

    def build():
        model = CLIP(exp.method).to(device)
        c = exp.method
        opt = torch.optim.AdamW(model.parameters(), lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
        return {"model": model, "opt": opt, "params": list(model.parameters())}

    def step(state, n):
        m, opt = state["model"], state["opt"]
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                image, text = m.encode_image(batch["image"]), m.encode_text(batch["text"])
            loss = clip_loss(image, text, m.scale())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return build, step


def platform_variant(method_name: str, exp, batch: dict, device):
    """The shared loop (build_context + run_epochs) over `n` copies of `batch`, one epoch per call."""
    from contrastlab.methods.registry import get_method
    from contrastlab.platform.train import build_context

    exp.train.eval_every_epochs = 10**6
    exp.train.epochs = 1
    exp.train.log_every_steps = 10**6

    def build():
        method = get_method(method_name)(exp.method).to(device)
        ctx = build_context(exp, method, device=device, steps_per_epoch=100)
        return {"ctx": ctx, "params": list(method.parameters())}

    def step(state, n):
        loop_epoch(state["ctx"], [batch] * n)

    return build, step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds per variant (median reported)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="small towers and 48 px crops: checks the script on a CPU")
    ap.add_argument("--variants", nargs="*", default=["open_clip", "clip_bare", "clip_platform", "declip_platform"])
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU machine, or pass --device cpu --tiny to check the script")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    from contrastlab.platform.config import build_experiment

    common = [f"train.batch_size={args.batch}", "train.precision=bf16"]
    clip_exp = build_experiment("clip", sets=clip_sets(args.tiny) + common)
    t0 = time.perf_counter()
    samples = synthetic_samples(args.batch, 256 if not args.tiny else 64)
    clip_batch = preprocessed_batch("clip", clip_exp, samples, device)
    print(f"[gpu_step] CLIP batch {{{', '.join(f'{k}: {tuple(v.shape)}' for k, v in clip_batch.items())}}} "
          f"({time.perf_counter() - t0:.1f} s to preprocess)")
    variants = []
    if "open_clip" in args.variants:
        variants.append(Variant("open_clip ViT-B-32 (bare loop)", device, *open_clip_variant(clip_batch, device, args.tiny),
                                args.batch, args.warmup))
    if "clip_bare" in args.variants:
        variants.append(Variant("contrastlab CLIP (bare loop)", device, *clip_bare_variant(clip_exp, clip_batch, device),
                                args.batch, args.warmup))
    if "clip_platform" in args.variants:
        exp = build_experiment("clip", sets=clip_sets(args.tiny) + common)
        variants.append(Variant("contrastlab CLIP (platform loop)", device, *platform_variant("clip", exp, clip_batch, device),
                                args.batch, args.warmup))
    if "declip_platform" in args.variants:
        exp = build_experiment("declip", sets=declip_sets(args.tiny) + common)
        t0 = time.perf_counter()
        declip_batch = preprocessed_batch("declip", exp, samples, device)
        print(f"[gpu_step] DeCLIP batch {{{', '.join(f'{k}: {tuple(v.shape)}' for k, v in declip_batch.items())}}} "
              f"({time.perf_counter() - t0:.1f} s to preprocess)")
        variants.append(Variant("contrastlab DeCLIP, 4 signals (platform loop)", device,
                                *platform_variant("declip", exp, declip_batch, device), args.batch, args.warmup))
    # Interleaved rounds, compared by medians: clock and thermal drift hit every variant alike.
    for r in range(args.rounds):
        print(f"[gpu_step] round {r + 1}/{args.rounds}: " + ", ".join(f"{v.name} {v.time(args.steps):.0f}/s" for v in variants))
    rows = [v.row() for v in variants]
    columns = ["variant", "samples/s", "step_ms", "spread", "peak_alloc_GiB", "params_M", "GFLOP/step", "TFLOP/s", "share_of_peak"]
    print()
    print_table(rows, columns)
    by = {r["variant"]: r for r in rows}
    ratios = {}
    ref = by.get("open_clip ViT-B-32 (bare loop)")
    for r in rows:
        if ref and r is not ref:
            ratios[f"{r['variant']} / open_clip"] = r["samples/s"] / ref["samples/s"]
    if "contrastlab CLIP (bare loop)" in by and "contrastlab CLIP (platform loop)" in by:
        ratios["platform loop overhead (CLIP)"] = 1 - by["contrastlab CLIP (platform loop)"]["samples/s"] / by["contrastlab CLIP (bare loop)"]["samples/s"]
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    dev = {"device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        dev.update({"name": p.name, "memory_GiB": round(p.total_memory / 2**30, 1), "sms": p.multi_processor_count,
                    "cuda": torch.version.cuda})
    write_report(args.out, {
        "benchmark": "gpu_step", "machine": {**machine(), **dev},
        "settings": {"batch": args.batch, "steps": args.steps, "rounds": args.rounds, "warmup": args.warmup, "precision": "bf16 autocast, fp32 weights",
                     "tiny": args.tiny, "tf32": device.type == "cuda"},
        "reference": {"open_clip_profile": OPEN_CLIP_PROFILE, "peak_bf16_tflops": PEAK_BF16_TFLOPS},
        "results": rows, "ratios": ratios,
    })


if __name__ == "__main__":
    main()
