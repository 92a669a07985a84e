#!/bin/sh
# Regenerates the committed protoc-c output for tools/rnw.proto into Sources/CRNWProto.
# Needs protoc-c (Debian protobuf-c-compiler). The output depends only on the .proto and the
# protoc-c version, which is recorded in the generated files' headers; run from anywhere.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
target="$root/Sources/CRNWProto"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --proto_path=tools keeps the generated names (rnw.pb-c.h) free of directory parts.
protoc-c --proto_path="$root/tools" --c_out="$work" "$root/tools/rnw.proto"

# SwiftPM compiles the .c in the target directory and exposes include/ as the public headers;
# the generated "rnw.pb-c.h" include resolves through the include/ search path, but point it
# there explicitly so the .c also compiles on its own.
sed 's|#include "rnw.pb-c.h"|#include "include/rnw.pb-c.h"|' "$work/rnw.pb-c.c" > "$target/rnw.pb-c.c"
cp "$work/rnw.pb-c.h" "$target/include/rnw.pb-c.h"

echo "regenerated $target/rnw.pb-c.c and $target/include/rnw.pb-c.h with $(protoc-c --version | head -n 1)"
