#!/usr/bin/env bash
# Builds the ResNetKit documentation through swift-docc-plugin and fails on any DocC warning,
# and on an article of the catalog that the landing page does not list.
set -uo pipefail
cd "$(dirname "$0")/.."

catalog=Sources/ResNetKit/ResNetKit.docc
status=0
for article in "$catalog"/*.md; do
    name="$(basename "$article" .md)"
    [ "$name" = ResNetKit ] && continue
    if ! grep -q "<doc:$name>" "$catalog/ResNetKit.md"; then
        echo "docs: $article is not listed on the landing page ($catalog/ResNetKit.md)"
        status=1
    fi
done

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
swift package generate-documentation --target ResNetKit >"$log" 2>&1
rc=$?
# SwiftPM's own build messages come before this line; what follows is DocC's.
warnings="$(sed -n '/^Building documentation for/,$p' "$log" | grep -E '(warning|error):' || true)"
if [ $rc -ne 0 ]; then
    cat "$log"
    echo "docs: generate-documentation failed (exit $rc)"
    status=1
elif [ -n "$warnings" ]; then
    sed -n '/^Building documentation for/,$p' "$log"
    echo "docs: $(printf '%s\n' "$warnings" | wc -l) DocC warning(s)"
    status=1
else
    echo "docs: built with 0 DocC warnings"
fi
exit $status
