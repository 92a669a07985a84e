#!/bin/sh
# Regenerates the committed protoc-c output: tools/rnw.proto into Sources/CRNWProto and
# tools/onnx-subset.proto into Sources/CONNXProto.
# Needs protoc-c (Debian protobuf-c-compiler). The output depends only on the .proto and the
# protoc-c version, which is recorded in the generated files' headers; run from anywhere.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# regen NAME TARGET: tools/NAME.proto → Sources/TARGET/NAME.pb-c.c + include/NAME.pb-c.h
regen() {
    name=$1
    target="$root/Sources/$2"
    mkdir -p "$target/include"
    # --proto_path=tools keeps the generated names (NAME.pb-c.h) free of directory parts.
    protoc-c --proto_path="$root/tools" --c_out="$work" "$root/tools/$name.proto"
    # SwiftPM compiles the .c in the target directory and exposes include/ as the public headers;
    # the generated include resolves through the include/ search path, but point it there
    # explicitly so the .c also compiles on its own.
    sed "s|#include \"$name.pb-c.h\"|#include \"include/$name.pb-c.h\"|" "$work/$name.pb-c.c" > "$target/$name.pb-c.c"
    cp "$work/$name.pb-c.h" "$target/include/$name.pb-c.h"
    echo "regenerated $target/$name.pb-c.c and $target/include/$name.pb-c.h with $(protoc-c --version | head -n 1)"
}

regen rnw CRNWProto
regen onnx-subset CONNXProto
