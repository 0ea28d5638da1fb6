"""Ray Tune sweep of clip on its embedded data, or on your shards with --data.

    python sweeps/clip.py --smoke
    ray job submit --working-dir . -- python sweeps/clip.py --data 's3://bucket/shards/train-{00000..00099}.tar' --eval-data 's3://bucket/shards/test-{00000..00004}.tar' --workers 8 --gpus-per-worker 1
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for a plain checkout

from contrastlab.platform.sweep_cli import script_main  # noqa: E402

if __name__ == "__main__":
    script_main("clip")
