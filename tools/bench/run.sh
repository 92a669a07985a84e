#!/usr/bin/env bash
# Times resnet-convert's forward pass against onnxruntime, OpenVINO and PyTorch on the same machine in one run:
# ResNet-50 224x224 batch 1 and 8, ResNet-18 224x224 batch 1, the same thread count for all four.
#
#   TF_PY=<python with tensorflow + tf_keras> BENCH_PY=<python with requirements.txt> tools/bench/run.sh [OUT_DIR]
#
# Environment: THREADS (default 2), ITERATIONS (default 20), ROUNDS (default 3: the whole comparison is
# repeated and every round printed, because shared machines are noisy).
#
# Models. PyTorch and onnxruntime run ResNets defined in bench_forward.py with torchvision's module names
# (state dicts saved as .pth, exported to ONNX). resnet-convert runs the very same .pth when it can read
# one (`resnet-convert inspect x.pth` succeeds); until then it runs Keras models of the same structure
# made by make_keras_models.py (keras.applications ResNet50 and a torchvision-shaped ResNet-18, random
# weights), and the PyTorch ResNet-50 then puts its strides where keras.applications does (ResNet v1:
# on the first 1x1 of a block) so all three do the same arithmetic.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$(mktemp -d)}"
threads="${THREADS:-2}"
iterations="${ITERATIONS:-20}"
rounds="${ROUNDS:-3}"
tf_py="${TF_PY:-python3}"
bench_py="${BENCH_PY:-python3}"
mkdir -p "$out"

echo "== building resnet-convert (release)" >&2
(cd "$root" && swift build -c release --product resnet-convert >&2)
bin="$(cd "$root" && swift build -c release --show-bin-path)/resnet-convert"

echo "== making models in $out" >&2
"$bench_py" "$here/bench_forward.py" make "$out" v1.5 >&2
if "$bin" inspect "$out/resnet50.pth" >/dev/null 2>&1; then
    variant=v1.5
    ours_r50="$out/resnet50.pth"; ours_r18="$out/resnet18.pth"
    note="resnet-convert runs the same .pth weights PyTorch and onnxruntime run"
else
    variant=v1
    "$bench_py" "$here/bench_forward.py" make "$out" v1 >&2
    "$tf_py" "$here/make_keras_models.py" "$out" >&2
    "$bin" convert "$out/resnet50.h5" "$out/resnet50.rnw" --force >/dev/null
    "$bin" convert "$out/resnet18.h5" "$out/resnet18.rnw" --force >/dev/null
    ours_r50="$out/resnet50.rnw"; ours_r18="$out/resnet18.rnw"
    note="resnet-convert cannot read .pth yet: it runs Keras models of the same structure (ResNet-50 v1 stride placement in all three runtimes), random weights"
fi

results="$out/results.jsonl"
: > "$results"
# Our plan measures its kernels per layer on first use and keeps the choice in this file: round 1 starts
# empty (its plan build includes the measurement), later rounds reuse it. Timed runs exclude both.
export RESNET_KERNEL_CACHE="$out/kernel-choices.json"
rm -f "$RESNET_KERNEL_CACHE"
for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds" >&2
    : > "$out/round.jsonl"
    for case in "resnet50 1 $ours_r50" "resnet50 8 $ours_r50" "resnet18 1 $ours_r18"; do
        set -- $case
        name=$1 batch=$2 file=$3
        "$bin" bench "$file" --batch "$batch" --size 224 --threads "$threads" --iterations "$iterations" --json \
            | "$bench_py" -c "import json,sys; d=json.load(sys.stdin); d.update(runtime='resnet-convert', model='$name'); print(json.dumps(d))" \
            >> "$out/round.jsonl"
        OMP_NUM_THREADS="$threads" "$bench_py" "$here/bench_forward.py" time "$out" "$name" "$batch" "$threads" "$iterations" "$variant" \
            2>/dev/null | grep '^{' >> "$out/round.jsonl"
    done
    cat "$out/round.jsonl" >> "$results"
    echo "round $round ($(date -u +%FT%TZ)):"
    "$bench_py" "$here/bench_forward.py" table "$out/round.jsonl"
done

echo
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(grep -o -w 'avx2\|fma\|avx512f' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "threads: $threads, iterations per timing: $iterations, rounds: $rounds"
echo "models: $note"
"$bench_py" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
plans = [r for r in rows if r["runtime"] == "resnet-convert" and r["model"] == "resnet50" and r["batch"] == 1]
if plans:
    print(f"resnet50 batch 1 plan build: {plans[0]['prepare_ms']:.0f} ms with an empty kernel cache "
          f"({plans[0]['measure_ms']:.0f} ms timing candidates), then " + ", ".join(f"{p['prepare_ms']:.0f}" for p in plans[1:]) + " ms")
opens = [r["open_rnw_ms"] for r in rows if r.get("open_rnw_ms") is not None and r["model"] == "resnet50"]
if opens:
    print(f"opening resnet50.rnw with checksum verification: median {statistics.median(opens):.1f} ms over {len(opens)} runs")
PY
echo "all JSON lines: $results"

# Conversion against the Python routes, when full-size inputs are named (see convert.sh):
#   CONVERT_H5=<keras .h5> CONVERT_PTH=<.pth> [TORCH_PY=<python with torch + safetensors>]
if [ -n "${CONVERT_H5:-}" ] && [ -n "${CONVERT_PTH:-}" ]; then
    echo
    BIN="$bin" TF_PY="$tf_py" TORCH_PY="${TORCH_PY:-$bench_py}" "$here/convert.sh" "$CONVERT_H5" "$CONVERT_PTH" "$out/convert"
fi
