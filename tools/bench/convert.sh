#!/usr/bin/env bash
# Times conversion of a full-size weight file: resnet-convert (`convert --no-verify`) against the usual
# Python routes (convert_python.py: h5py + numpy transposes + safetensors for Keras .h5, torch.load +
# safetensors for .pth; each also once more with an fsync of its output, as resnet-convert does), side
# by side in one run, and prints wall time and peak RSS with ratios.
#
#   TF_PY=<python with h5py, numpy, safetensors> TORCH_PY=<python with torch, safetensors> \
#       tools/bench/convert.sh KERAS.h5 MODEL.pth [OUT_DIR]
#
# Environment: RUNS (default 5). Every tool runs RUNS times per file, interleaved (ours, python, ours,
# …) so drift hits both alike; the table shows the median and the best run, each measured with
# /usr/bin/time -f (elapsed wall, max RSS). One untimed run of each first warms the page cache.
# BIN=<resnet-convert> skips the build; BASELINE=<another resnet-convert> times that one too (e.g. a
# build of an older commit), as "baseline".
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
[ $# -ge 2 ] || { sed -n 2,12p "$0"; exit 2; }
h5="$1"; pth="$2"
out="${3:-$(mktemp -d)}"
runs="${RUNS:-5}"
tf_py="${TF_PY:-python3}"
torch_py="${TORCH_PY:-python3}"
mkdir -p "$out"

if [ -z "${BIN:-}" ]; then
    echo "== building resnet-convert (release)" >&2
    (cd "$root" && swift build -c release --product resnet-convert >&2)
    BIN="$(cd "$root" && swift build -c release --show-bin-path)/resnet-convert"
fi

timings="$out/convert-times.tsv"
: > "$timings"
# one_run LABEL FILE-KIND CMD...: appends "label kind wall_s maxrss_kb user_s sys_s" to $timings.
one_run() {
    local label="$1" kind="$2"; shift 2
    /usr/bin/time -f "%e %M %U %S" -o "$out/time.txt" "$@" >/dev/null 2>"$out/stderr.txt" \
        || { echo "failed: $*" >&2; cat "$out/stderr.txt" >&2; exit 1; }
    printf '%s\t%s\t%s\n' "$label" "$kind" "$(tr ' ' '\t' < "$out/time.txt")" >> "$timings"
}

for kind in keras torch; do
    if [ "$kind" = keras ]; then src="$h5"; py="$tf_py"; else src="$pth"; py="$torch_py"; fi
    ours=(env "$BIN" convert "$src" "$out/$kind.rnw" --no-verify --force)
    theirs=("$py" "$here/convert_python.py" "$kind" "$src" "$out/$kind.safetensors")
    durable=("$py" "$here/convert_python.py" "$kind" "$src" "$out/$kind.durable.safetensors" --fsync)
    # Warm the page cache and the imports; a failure here (say, a missing Python package) is shown.
    for cmd in ours theirs durable; do
        eval 'warm=("${'$cmd'[@]}")'
        "${warm[@]}" >/dev/null 2>"$out/stderr.txt" || { echo "failed: ${warm[*]}" >&2; cat "$out/stderr.txt" >&2; exit 1; }
    done
    for _ in $(seq 1 "$runs"); do
        one_run resnet-convert "$kind" "${ours[@]}"
        one_run python "$kind" "${theirs[@]}"
        one_run python+fsync "$kind" "${durable[@]}"
        if [ -n "${BASELINE:-}" ]; then
            one_run baseline "$kind" env "$BASELINE" convert "$src" "$out/$kind.baseline.rnw" --no-verify --force
        fi
    done
done

echo "conversion of a full-size weight file, $runs runs each ($(date -u +%FT%TZ))"
echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
echo "python routes: keras = $("$tf_py" -c 'import h5py, numpy, safetensors; print(f"h5py {h5py.__version__}, numpy {numpy.__version__}, safetensors {safetensors.__version__}")'); torch = $("$torch_py" -c 'import torch, safetensors; print(f"torch {torch.__version__}, safetensors {safetensors.__version__}")')"
printf '  keras: %s (%s bytes)\n  torch: %s (%s bytes)\n' "$h5" "$(stat -c %s "$h5")" "$pth" "$(stat -c %s "$pth")"
python3 - "$timings" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
data = {}
for label, kind, wall, rss, user, system in rows:
    data.setdefault((kind, label), []).append((float(wall), int(rss) / 1024, float(user) + float(system)))
print(f"{'input':6} {'tool':15} {'wall med s':>10} {'wall min s':>10} {'CPU med s':>9} {'RSS med MiB':>11} {'RSS max MiB':>11}")
for kind in ("keras", "torch"):
    for label in ("resnet-convert", "python", "python+fsync", "baseline"):
        if (kind, label) not in data:
            continue
        v = data[(kind, label)]
        print(f"{kind:6} {label:15} {statistics.median(x[0] for x in v):10.3f} {min(x[0] for x in v):10.3f}"
              f" {statistics.median(x[2] for x in v):9.3f} {statistics.median(x[1] for x in v):11.1f} {max(x[1] for x in v):11.1f}")
print()
print(f"{'input':6} {'against':13} {'wall ratio (median)':>20} {'wall ratio (best)':>18} {'CPU ratio (median)':>19} {'RSS ratio (median)':>19}")
for kind in ("keras", "torch"):
    for against in ("python", "python+fsync"):
        ours, py = data[(kind, "resnet-convert")], data[(kind, against)]
        med = lambda v, i: statistics.median(x[i] for x in v)
        print(f"{kind:6} {against:13} {med(ours, 0) / med(py, 0):20.3f} {min(x[0] for x in ours) / min(x[0] for x in py):18.3f}"
              f" {med(ours, 2) / med(py, 2):19.3f} {med(ours, 1) / med(py, 1):19.3f}")
PY
echo "(ratios: resnet-convert / python route; \"python\" does not fsync (the usual route), \"python+fsync\" flushes its output as resnet-convert does before its rename)"
