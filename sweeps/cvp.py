"""Ray Tune sweep of cvp on its embedded data (usgs-cube), or on your shards with --data.

    python sweeps/cvp.py --smoke
    python sweeps/cvp.py --set "data.embedded_params={patch_size: 15}"   # card w in {9, 11, 15} needs 15x15 stored patches
    ray job submit --working-dir . -- python sweeps/cvp.py --data '/data/ip/pixels-*.tar' --eval-data '/data/ip/pixels-*.tar' --set method.n_bands=200
      (shards from contrastlab.platform.datasets.hsi.convert_hsi(..., patch_size=15); train.epochs = predict + contrast epochs)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for a plain checkout

from contrastlab.platform.sweep_cli import script_main  # noqa: E402

if __name__ == "__main__":
    script_main("cvp")
