#!/usr/bin/env bash
# Does the per-layer kernel choice find the fastest plan, whatever the fixed default would have been?
#
#   tools/bench/kernel_choice.sh MODEL_DIR [OUT_DIR]
#
# MODEL_DIR holds resnet50.pth and resnet18.pth (tools/bench/bench_forward.py make DIR v1.5 writes them).
# For ResNet-50 batch 1 and 8 and ResNet-18 batch 1, in alternating rounds, it times:
#   pinned N    every layer's matrix kernel forced to family N (0 OpenBLAS, 1 AVX2, 2 AVX-512) — a CPU
#               where only that family exists, or where it would have been the fixed default; the
#               Winograd and transform choices are still measured
#   fixed       no measurement at all: the fixed rules alone (the behaviour before kernel choice)
#   auto N      everything measured, with family N as the fixed default the measurement starts from and
#               keeps on a tie; each round starts from an empty cache file, so each round measures anew
# and prints, per case, auto N against the fastest pinned plan. Environment: THREADS (2), ITERATIONS (20),
# ROUNDS (3). Families this CPU lacks fall back to the best below them (the pinned row then repeats one).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
models="$1"
out="${2:-$(mktemp -d)}"
threads="${THREADS:-2}"
iterations="${ITERATIONS:-20}"
rounds="${ROUNDS:-3}"
mkdir -p "$out"
(cd "$root" && swift build -c release --product resnet-convert >&2)
bin="$(cd "$root" && swift build -c release --show-bin-path)/resnet-convert"
results="$out/kernel-choice.jsonl"
: > "$results"
settings="pinned:gemm-kernel=0 pinned:gemm-kernel=1 pinned:gemm-kernel=2 fixed:measure=0 auto:gemm-default=0 auto:gemm-default=1 auto:gemm-default=2"
for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds" >&2
    for case in "resnet50 1" "resnet50 8" "resnet18 1"; do
        set -- $case
        for s in $settings; do
            kind="${s%%:*}" tuning="${s#*:}"
            cache="$out/cache-$round-$1-$2-${tuning}.json"
            rm -f "$cache"
            RESNET_KERNEL_CACHE="$cache" RESNET_PLAN_TUNING="$tuning" \
                "$bin" bench "$models/$1.pth" --batch "$2" --size 224 --threads "$threads" --iterations "$iterations" --json \
                | python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'model': '$1', 'batch': $2, 'kind': '$kind', 'setting': '$tuning', 'median_ms': d['median_ms'], 'prepare_ms': d['prepare_ms'], 'measure_ms': d['measure_ms']}))" \
                >> "$results"
        done
    done
done
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; threads $threads; commit $(git -C "$root" rev-parse --short HEAD); $(date -u +%F)"
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cases = []
for r in rows:
    if (r["model"], r["batch"]) not in cases:
        cases.append((r["model"], r["batch"]))
settings = []
for r in rows:
    if r["setting"] not in settings:
        settings.append(r["setting"])
print("medians over rounds of each setting's median latency (ms); auto/best is against the fastest pinned family")
print(f"{'model':<9} {'batch':>5} " + " ".join(f"{s:>15}" for s in settings) + f" {'worst auto/best':>16}")
for model, batch in cases:
    med = {s: statistics.median(r["median_ms"] for r in rows if (r["model"], r["batch"], r["setting"]) == (model, batch, s)) for s in settings}
    best = min(v for s, v in med.items() if s.startswith("gemm-kernel"))
    worst = max(v for s, v in med.items() if s.startswith("gemm-default")) / best
    print(f"{model:<9} {batch:>5} " + " ".join(f"{med[s]:>15.1f}" for s in settings) + f" {worst:>16.3f}")
prep = [r for r in rows if r["kind"] == "auto" and r["model"] == "resnet50" and r["batch"] == 1]
if prep:
    print(f"resnet50 batch 1, plan build with measurement (empty cache): median {statistics.median(r['prepare_ms'] for r in prep):.0f} ms,"
          f" of which timing candidates {statistics.median(r['measure_ms'] for r in prep):.0f} ms")
PY
