#!/usr/bin/env bash
# Builds one libFuzzer harness (ASan + libFuzzer, release) and runs it for a set time.
#
#   tools/fuzz/run.sh NAME SECONDS [extra libFuzzer flags]
#   NAME: torch | pickle | npy | keras-config | rnw      (all: every harness in turn)
#
# Seeds are made from the committed fixtures into seeds/NAME; the growing corpus lives in
# corpus/NAME and crashing inputs land in artifacts/NAME (all three are git-ignored).
# Extra flags go to libFuzzer, e.g. `-runs=1100000` to stop after that many executions.
# Runs under `nice -n 19`; the Swift backtracer is switched off because it stalls on
# libFuzzer's deadly-signal path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
name="${1:?usage: run.sh NAME SECONDS}"
seconds="${2:?usage: run.sh NAME SECONDS}"
shift 2
names=(torch pickle npy keras-config rnw)
if [[ "$name" == all ]]; then
    for n in "${names[@]}"; do "$0" "$n" "$seconds" "$@"; done
    exit 0
fi
[[ " ${names[*]} " == *" $name "* ]] || { echo "unknown harness '$name' (${names[*]})" >&2; exit 2; }

cd "$here"
# FUZZ_NO_BUILD=1 reuses the built binary (lets several harnesses run side by side).
# SwiftPM passes its --sanitize values to swiftc as separate flags in an order that changes from
# build to build, and swiftc keeps only the last one: a build that ends in -sanitize=address has no
# coverage instrumentation, and libFuzzer then runs blind (a couple of hundred counters, all in the
# harness). The combined flag at the end of the command line keeps both.
[[ -n "${FUZZ_NO_BUILD:-}" ]] || nice -n 19 swift build -c release --sanitize=fuzzer --sanitize=address \
    -Xswiftc -sanitize=fuzzer,address --product "fuzz-$name" 2>&1 \
    | grep -v "Cannot export local symbol" >&2
bin="$here/.build/release/fuzz-$name"
# Refuse to fuzz blind: ResNetKit alone has tens of thousands of coverage counters.
counters=$("$bin" -runs=0 2>&1 </dev/null | sed -n 's/.*(\([0-9]*\) inline 8-bit counters).*/\1/p' | head -n 1)
if [[ -z "$counters" || "$counters" -lt 5000 ]]; then
    echo "fuzz-$name has ${counters:-no} coverage counters: ResNetKit was built without coverage instrumentation; rebuild (rm -rf $here/.build)" >&2
    exit 1
fi

seeds="$here/seeds/$name"
if [[ ! -d "$seeds" ]]; then
    mkdir -p "$seeds"
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    case "$name" in
    torch)
        cp "$repo"/fixtures/torch/*/*.{pth,pt,th} "$repo"/fixtures/hostile/*.pt "$seeds"/ 2>/dev/null || true ;;
    pickle)
        cp "$repo"/fixtures/hostile/pickles/*.pkl "$seeds"/
        for f in "$repo"/fixtures/torch/*/*.{pth,pt,th}; do
            [[ -f "$f" ]] || continue
            member="$(unzip -Z1 "$f" 2>/dev/null | grep '/data\.pkl$' | head -1 || true)"
            if [[ -n "$member" ]]; then unzip -p "$f" "$member" > "$seeds/$(basename "$f").pkl"
            else cp "$f" "$seeds/$(basename "$f").legacy"; fi   # a legacy stream starts with a pickle
        done ;;
    npy)
        for f in "$repo"/fixtures/*/*/io.npz; do
            d="$(basename "$(dirname "$f")")"
            cp "$f" "$seeds/$d.npz"
            unzip -qo "$f" -d "$tmp/$d"
            for m in "$tmp/$d"/*.npy; do cp "$m" "$seeds/$d-$(basename "$m")"; done
        done ;;
    keras-config)
        for f in "$repo"/fixtures/keras/*/*.keras; do
            unzip -p "$f" config.json > "$seeds/$(basename "$(dirname "$f")")-$(basename "$f").json"
        done
        # The real configs are 60-100 KB (about 20 executions a second under ASan): add small
        # ones, the first few layers of each with the output moved to the last kept layer.
        python3 - "$seeds" <<'PY'
import json, pathlib, sys
seeds = pathlib.Path(sys.argv[1])
for f in sorted(seeds.glob("*.json")):
    model = json.loads(f.read_text())
    for keep in (3, 6, 12):
        m = json.loads(json.dumps(model))
        cfg = m["config"]
        cfg["layers"] = cfg["layers"][:keep]
        last = cfg["layers"][-1]["name"] if "name" in cfg["layers"][-1] else cfg["layers"][-1]["config"]["name"]
        cfg["output_layers"] = [[last, 0, 0]]
        for layer in cfg["layers"]:
            for k in ("module", "registered_name", "build_config"):
                layer.pop(k, None)
            layer.get("config", {}).pop("dtype", None)
        (seeds / f"{f.stem}-first{keep}.json").write_text(json.dumps(m, separators=(",", ":")))
PY
        ;;
    rnw)
        cli="$repo/.build/debug/resnet-convert"
        [[ -x "$cli" ]] || (cd "$repo" && swift build --product resnet-convert >&2)
        for f in "$repo"/fixtures/bad/good.h5 "$repo"/fixtures/keras/seed-keras/keras3.keras \
                 "$repo"/fixtures/torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth; do
            "$cli" convert "$f" "$seeds/$(basename "$f").rnw" >/dev/null
        done ;;
    esac
fi

mkdir -p "$here/corpus/$name" "$here/artifacts/$name"
log="$here/artifacts/$name/run-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "fuzz-$name: ${seconds}s, seeds $(ls "$seeds" | wc -l), corpus $(ls "$here/corpus/$name" | wc -l); log $log" >&2
set +e
SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}" nice -n 19 "$bin" \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=3072 -timeout=10 \
    -artifact_prefix="$here/artifacts/$name/" "$@" "$here/corpus/$name" "$seeds" > "$log" 2>&1
status=$?
set -e
grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^==.*ERROR|^SUMMARY|Test unit written' "$log" >&2 || true
exit $status
