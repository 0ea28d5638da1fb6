#!/usr/bin/env bash
# The device check for data.photometric=device (issue 7), for a session lent a GPU machine: one short
# script, results under $OUT (default ./gpu_views_out). About 6-8 min on a 16-core H100 host.
#   1. the CUDA test of device_views (CPU and GPU agree);
#   2. augment_views.py --quick: finish_on_device on cuda beside the CPU views and the read half;
#   3. ingest.py --quick, same sets, 8 read processes: views whole in the read tasks (reader) and
#      finished on the Train worker's GPU (device), one run each, back to back on the same machine.
set -euo pipefail
OUT=${OUT:-gpu_views_out}
mkdir -p "$OUT"
export RAY_AUTH_MODE=disabled
python -m pytest -q -p no:cacheprovider tests/platform/test_device_views.py 2>&1 | tail -3 | tee "$OUT/test_device_views.txt"
python benchmarks/augment_views.py --quick --out "$OUT/augment_views_gpu.json" 2>&1 | tail -8
for place in reader device; do
  python benchmarks/ingest.py --quick --procs 8 --rounds 2 --epochs 2 --rss-factor 1 --photometric "$place" --device cuda \
    --out "$OUT/ingest_${place}_gpu.json" > "$OUT/ingest_${place}_gpu.log" 2>&1 || { tail -30 "$OUT/ingest_${place}_gpu.log"; exit 1; }
  grep -A4 "^set " "$OUT/ingest_${place}_gpu.log"
done
