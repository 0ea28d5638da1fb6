"""CVP vs SVM baselines on usgs-cube, same labelled budget: OA / AA / kappa, mean ± std over seeds.

Arms (each seed uses the same per-class draws of labelled pixels for every arm):
  raw    - SVM on the centre pixel's (brightness-normalised, z-scored) spectrum
  pca    - SVM on PCA-15 of those spectra (PCA fitted on every pixel's spectrum, no labels)
  views  - SVM on CVP stage-1 views [v1; v2] (ablation of stage 2; read from the same CVP run)
  cvp    - SVM on CVP stage-2 features (method.features, default the penultimate activations)
CVP runs with the card's §g small-scale settings (CVP.SMALL_SCALE) through run_local (no Ray): batches of
256 (stage 2), which stage 1 splits into method.predict_batch_size = 128 (one Adam step per chunk). Before
session 20 both stages ran at 128 (`--set train.batch_size=128 --set method.predict_batch_size=0`).

    python benchmarks/cvp_comparison.py --out cvp_comparison.json --seeds 0 1 2            # card §g scale
    python benchmarks/cvp_comparison.py --out /tmp/cvp_quick.json --seeds 0 --quick        # minutes on 2 cores
    python benchmarks/cvp_comparison.py --out r.json --device cuda --set method.split_scheme=interleave
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from contrastlab.methods.cvp.config import SMALL_SCALE  # noqa: E402
from contrastlab.methods.cvp.svm import svm_scores  # noqa: E402
from contrastlab.platform.datasets import ensure_dataset  # noqa: E402
from contrastlab.platform.datasets.hsi import draw_train_test  # noqa: E402

METRICS = ("oa", "aa", "kappa")


def centre_spectra(paths: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices sorted, centre spectra (N, b), labels) read straight from the shards."""
    rows = {}
    for path in paths:
        with tarfile.open(path) as tar:
            members = {}
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
            for key, f in members.items():
                info = json.loads(f["json"])
                patch = np.load(io.BytesIO(f["npy"])).astype(np.float32)
                c = patch.shape[-1] // 2
                rows[info["index"]] = (patch[:, c, c], info["label"])
    idx = np.array(sorted(rows))
    return idx, np.stack([rows[i][0] for i in idx]), np.array([rows[i][1] for i in idx])


def baseline_scores(x: np.ndarray, labels: np.ndarray, draws, svm: str, c: float) -> dict:
    res = [svm_scores(x, labels, tr, te, svm, c)[0] for tr, te in draws]
    return {k: float(np.mean([r[k] for r in res])) for k in METRICS}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON results file")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="32x32 cube of 48 bands, 3 + 10 epochs: a few minutes on 2 cores")
    p.add_argument("--labels-per-class", type=float, default=10)
    p.add_argument("--draws", type=int, default=3, help="labelled draws per seed (averaged)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], help="extra --set overrides for the CVP run")
    args = p.parse_args(argv)

    if args.quick:
        data = {"size": 32, "n_bands": 48}
        sets = {**SMALL_SCALE, "method.predict_epochs": 3, "method.contrast_epochs": 10, "method.pre_start_epoch": 3}
        args.draws = min(args.draws, 2)
    else:
        data = {"size": 64, "n_bands": 64}  # card §g: 4,096 px, 64 bands
        sets = dict(SMALL_SCALE)
    sets.update({"method.n_bands": data["n_bands"], "train.batch_size": 256, "method.predict_batch_size": 128,
                 "train.epochs": sets["method.predict_epochs"] + sets["method.contrast_epochs"],
                 "method.eval_labels_per_class": args.labels_per_class, "method.eval_draws": args.draws,
                 "train.eval_every_epochs": sets["method.predict_epochs"] + sets["method.contrast_epochs"],
                 "data.embedded_params": "{" + ", ".join(f"{k}: {v}" for k, v in data.items()) + "}"})
    svm, c = sets["method.svm"], sets["method.svm_c"]

    ds = ensure_dataset("usgs-cube", seed=0, **data)
    idx, spectra, labels = centre_spectra(ds.splits["pixels"])
    from sklearn.decomposition import PCA

    pca15 = PCA(15, random_state=0).fit_transform(spectra)

    from contrastlab.platform.local import run_local

    per_seed = []
    for seed in args.seeds:
        eval_seed = 1000 * seed
        draws = [draw_train_test(labels, args.labels_per_class, eval_seed + k) for k in range(args.draws)]
        row = {"seed": seed, "raw": baseline_scores(spectra, labels, draws, svm, c), "pca": baseline_scores(pca15, labels, draws, svm, c)}
        # one CVP run gives both arms: in stage 2 evaluate() also scores the frozen stage-1 views (views_*)
        run_sets = {**sets, "run.seed": seed, "method.eval_seed": eval_seed}
        t0 = time.time()
        r = run_local("cvp", [f"{k}={v}" for k, v in run_sets.items()] + list(args.set), quiet=True, device=args.device)
        last = r.history[-1]
        row["cvp"] = {k: float(last[k]) for k in METRICS}
        row["views"] = {k: float(last.get(f"views_{k}", last[k])) for k in METRICS}
        row["cvp_seconds"] = time.time() - t0
        row["cvp_final_loss_mi"] = float(last.get("train_loss_mi", float("nan")))
        row["cvp_clusters_used"] = float(last.get("train_clusters_used", float("nan")))
        per_seed.append(row)
        print(json.dumps(row), flush=True)

    summary = {arm: {k: (float(np.mean([r[arm][k] for r in per_seed])), float(np.std([r[arm][k] for r in per_seed], ddof=1 if len(per_seed) > 1 else 0)))
                     for k in METRICS} for arm in ("raw", "pca", "views", "cvp")}
    print(f"\nusgs-cube {data}, {args.labels_per_class:g} labels/class, {args.draws} draws x {len(args.seeds)} seeds, SVM {svm}")
    print(f"{'arm':8s} " + " ".join(f"{k:>17s}" for k in METRICS))
    for arm, s in summary.items():
        print(f"{arm:8s} " + " ".join(f"{m:8.3f} ± {sd:6.3f}" for m, sd in (s[k] for k in METRICS)))
    result = {"args": vars(args), "data": data, "cvp_sets": sets, "per_seed": per_seed, "summary": summary}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
