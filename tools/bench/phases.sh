#!/usr/bin/env bash
# Runs one resnet-convert command with RESNET_CONVERT_TRACE set and prints each traced phase as
# milliseconds since the command started, then the total wall time.
#
#   tools/bench/phases.sh BIN convert IN.h5 OUT.rnw --no-verify --force
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,5p "$0"; exit 2; }
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
start=$EPOCHREALTIME
RESNET_CONVERT_TRACE=1 "$@" 2>"$log" >/dev/null || { cat "$log" >&2; exit 1; }
end=$EPOCHREALTIME
awk -v s="$start" '$1 == "trace" { printf "%8.1f ms  ", ($2 - s) * 1000; $1 = ""; $2 = ""; sub(/^  /, ""); print }' "$log"
awk -v s="$start" -v e="$end" 'BEGIN { printf "%8.1f ms  exit\n", (e - s) * 1000 }'
