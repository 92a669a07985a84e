#!/usr/bin/env python3
"""The usual Python routes from a ResNet weight file to one flat weight file, for timing against
`resnet-convert convert --no-verify` (tools/bench/convert.sh runs both side by side).

  python convert_python.py keras IN.h5 OUT.safetensors   # h5py + numpy transposes + safetensors.numpy
  python convert_python.py torch IN.pth OUT.safetensors  # torch.load + safetensors.torch
  python convert_python.py keras IN.h5 OUT.safetensors --fsync   # the same, flushed to the device

keras: every dataset named in the file's `layer_names`/`weight_names` (legacy .h5, full model or
weights only) is read with h5py; 4-D conv kernels are transposed HWIO -> OIHW and 2-D dense kernels
(in, out) -> (out, in) with numpy into contiguous arrays, as a PyTorch-layout export does; everything
goes to one safetensors file. Keras 3 `.weights.h5` (layers/<name>/vars/<i>) is walked likewise.

torch: `torch.load(map_location="cpu", weights_only=True)`, the state dict unwrapped from the usual
checkpoint keys, every tensor made contiguous, then `safetensors.torch.save_file`.

Neither route fsyncs its output by default, which is the usual route; with --fsync the output is
flushed to the device (os.fsync) before the script returns, the same durability resnet-convert gives
(it fsyncs before its rename), for an apples-to-apples column.
Only the packages the route needs are imported, so each runs in its own venv.
"""
import sys


def keras_route(src: str, dst: str) -> int:
    import h5py
    import numpy as np
    from safetensors.numpy import save_file

    def decode(names):
        return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]

    def attr_list(group, name):
        if name in group.attrs:
            return decode(group.attrs[name])
        chunks, i = [], 0
        while f"{name}{i}" in group.attrs:
            chunks += decode(group.attrs[f"{name}{i}"])
            i += 1
        return chunks

    out = {}

    def put(key, arr):
        arr = np.asarray(arr)
        if arr.ndim == 4:
            arr = np.ascontiguousarray(arr.transpose(3, 2, 0, 1))   # HWIO -> OIHW
        elif arr.ndim == 2:
            arr = np.ascontiguousarray(arr.T)                       # (in, out) -> (out, in)
        out[key] = arr.astype(np.float32, copy=False)

    with h5py.File(src, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        layers = attr_list(root, "layer_names")
        if layers:
            for layer in layers:
                g = root[layer]
                for wn in attr_list(g, "weight_names"):
                    put(f"{layer}/{wn}", g[wn][()])
        else:   # Keras 3 .weights.h5
            def walk(name, obj):
                if isinstance(obj, h5py.Dataset) and "/vars/" in name:
                    put(name, obj[()])
            f.visititems(walk)
    save_file(out, dst)
    return len(out)


def torch_route(src: str, dst: str) -> int:
    import torch
    from safetensors.torch import save_file

    obj = torch.load(src, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    tensors = {k: v.contiguous() for k, v in obj.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, dst)
    return len(tensors)


def main() -> None:
    args = sys.argv[1:]
    durable = "--fsync" in args
    args = [a for a in args if a != "--fsync"]
    if len(args) != 3 or args[0] not in ("keras", "torch"):
        sys.exit(__doc__)
    route, src, dst = args
    n = (keras_route if route == "keras" else torch_route)(src, dst)
    if durable:
        import os
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    print(f"{route}: {n} tensors -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    main()
