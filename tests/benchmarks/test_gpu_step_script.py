"""The GPU step benchmark keeps working where no GPU is: its --tiny CPU mode runs every variant
(open_clip's own model, our CLIP bare and through the platform loop, DeCLIP through the loop)
and writes the report the README's GPU figures come from."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_step_tiny_cpu_run_writes_every_variant(tmp_path):
    out = tmp_path / "gpu_step.json"
    cmd = [sys.executable, os.path.join(REPO, "benchmarks", "gpu_step.py"), "--tiny", "--device", "cpu",
           "--batch", "4", "--steps", "1", "--warmup", "1", "--rounds", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    report = json.loads(out.read_text())
    names = [r["variant"] for r in report["results"]]
    assert names == ["open_clip ViT-B-32 (bare loop)", "contrastlab CLIP (bare loop)", "contrastlab CLIP (platform loop)",
                     "contrastlab DeCLIP, 4 signals (platform loop)"]
    for row in report["results"]:
        assert row["samples/s"] > 0 and row["GFLOP/step"] > 0
    clip_bare, clip_loop, declip = report["results"][1:]
    assert clip_bare["params_M"] == clip_loop["params_M"]  # the same model, with and without the loop
    assert declip["GFLOP/step"] > 1.5 * clip_loop["GFLOP/step"]  # two views + EDA and masked captions
    assert "platform loop overhead (CLIP)" in report["ratios"]
