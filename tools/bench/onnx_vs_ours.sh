#!/usr/bin/env bash
# Times resnet-convert's forward pass (`bench`) against onnxruntime on the same model, same input
# (sin ramp), same thread count, rounds interleaved; for models run.sh does not build itself, such as
# torchvision's resnext50_32x4d (tools/make_torch_fixtures.py --full writes it; convert it with
# `resnet-convert X.pth X.rnw` and export it with `resnet-convert export X.rnw X.onnx`).
#
#   BENCH_PY=<python with onnxruntime, numpy> tools/bench/onnx_vs_ours.sh BIN MODEL.rnw MODEL.onnx
#
# Environment: ROUNDS (3), THREADS (2), BATCHES ("1 8"), ITERATIONS (20 at batch 1, 8 above).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ $# -eq 3 ] || { sed -n 2,9p "$0"; exit 2; }
bin="$1"; rnw="$2"; onnx="$3"
py="${BENCH_PY:-python3}"
threads="${THREADS:-2}"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; $(date -u +%FT%TZ)"
for round in $(seq 1 "${ROUNDS:-3}"); do
    for batch in ${BATCHES:-1 8}; do
        iterations="${ITERATIONS:-$([ "$batch" = 1 ] && echo 20 || echo 8)}"
        ours=$("$bin" bench "$rnw" --batch "$batch" --size 224 --iterations "$iterations" --threads "$threads" --json)
        theirs=$("$py" "$here/ort_time.py" "$onnx" "$batch" "$threads" "$iterations")
        "$py" - "$round" "$batch" "$ours" "$theirs" <<'PY'
import json, sys
r, b, ours, theirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(f"round {r} batch {b}: resnet-convert median {ours['median_ms']:.1f} ms (min {ours['min_ms']:.1f}), "
      f"{theirs['runtime']} median {theirs['median_ms']:.1f} ms (min {theirs['min_ms']:.1f}), "
      f"ratio {ours['median_ms'] / theirs['median_ms']:.2f}")
PY
    done
done
