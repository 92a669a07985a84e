"""Write an `io.npz` of goldens for `resnet-convert --expect` from the source framework itself.

    python -m rnw.goldens torchvision:resnet18 --weights model.pth -o io.npz
    python -m rnw.goldens timm:resnet50 --weights model.pth -o io.npz
    python -m rnw.goldens keras:model.h5 -o io.npz          (also .keras; any path ending .h5/.keras)
    python -m rnw.goldens mypkg.models:build --weights model.pth -o io.npz   (function returning a model)

The archive holds what resnet-convert reads: `input` (float32 images, a fixed seed), `output`
(the model's float32 output for them, inference mode) and `layout` ('NCHW' for PyTorch, 'NHWC'
for Keras). Without `--weights` a torch model keeps its (seeded) random initialisation; then
`--save-weights state.pth` writes that state dict so the same weights can be converted and checked.

Only the framework the source needs is imported: torch for torchvision/timm names, tensorflow
(tf.keras, or keras 3 when tf is absent) for Keras files; a `module:function` source imports what
its module imports, and the returned model's type decides how it is run. A Keras file is opened
with `compile=False` and without unsafe deserialisation; PyTorch weights with `weights_only=True`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import numpy as np


def _images(shape, seed: int) -> np.ndarray:
    # Smooth, image-like inputs (a low-frequency pattern plus a little noise) keep BatchNorm
    # statistics in the range a trained model expects, unlike white noise.
    rng = np.random.default_rng(seed)
    n, a, b, c = shape
    x = rng.standard_normal(shape).astype(np.float32) * 0.25
    yy, xx = np.meshgrid(np.linspace(0, 1, a, dtype=np.float32), np.linspace(0, 1, b, dtype=np.float32), indexing="ij")
    for i in range(n):
        for ch in range(c):
            fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
            x[i, :, :, ch] += np.sin(fx * 6.28 * xx + fy * 6.28 * yy + ph).astype(np.float32)
    return x  # NHWC


def _torch_model(kind: str, name: str, args):
    import torch
    torch.manual_seed(args.seed)
    if kind == "torchvision":
        import torchvision
        model = torchvision.models.get_model(name, weights=None)
    elif kind == "timm":
        import timm
        model = timm.create_model(name, pretrained=False)
    else:
        raise ValueError(kind)
    return model


def _load_torch_weights(model, path: str):
    import torch
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    model.load_state_dict(state, strict=True)


def _run_torch(model, args):
    import torch
    if args.weights:
        _load_torch_weights(model, args.weights)
    model.eval()
    h, w = args.input_size
    x = _images((args.batch, h, w, args.channels), args.seed).transpose(0, 3, 1, 2).copy()
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    if args.save_weights:
        torch.save(model.state_dict(), args.save_weights)
    return x, y.detach().cpu().numpy().astype(np.float32), "NCHW"


def _keras():
    try:
        import tensorflow as tf
        return tf.keras
    except ImportError:
        import keras
        return keras


def _run_keras(model, args):
    if args.weights:
        model.load_weights(args.weights)
    shape = model.inputs[0].shape
    h = shape[1] if shape[1] is not None else args.input_size[0]
    w = shape[2] if shape[2] is not None else args.input_size[1]
    c = shape[3] if shape[3] is not None else args.channels
    x = _images((args.batch, int(h), int(w), int(c)), args.seed)
    y = model(x, training=False)
    return x, np.asarray(y, dtype=np.float32), "NHWC"


def _is_keras_path(s: str) -> bool:
    return s.endswith((".h5", ".hdf5", ".keras"))


def goldens(source: str, args) -> tuple[np.ndarray, np.ndarray, str]:
    kind, _, rest = source.partition(":")
    if kind in ("torchvision", "timm") and rest:
        return _run_torch(_torch_model(kind, rest, args), args)
    if kind == "keras" and rest or _is_keras_path(source):
        path = rest if kind == "keras" else source
        keras = _keras()
        try:
            model = keras.models.load_model(path, compile=False, safe_mode=True)
        except TypeError:  # tf.keras 2 has no safe_mode
            model = keras.models.load_model(path, compile=False)
        return _run_keras(model, args)
    if rest and all(p.isidentifier() for p in kind.split(".")) and rest.isidentifier():
        sys.path.insert(0, os.getcwd())
        model = getattr(importlib.import_module(kind), rest)()
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            return _run_torch(model, args)
        if hasattr(model, "predict") and hasattr(model, "inputs"):
            return _run_keras(model, args)
        raise SystemExit(f"error: {source} returned a {type(model).__name__}, neither a torch nn.Module nor a Keras model")
    raise SystemExit(f"error: cannot tell what {source!r} is: use torchvision:NAME, timm:NAME, keras:FILE, "
                     "a .h5/.keras path, or module:function")


def write_npz(path: str, x: np.ndarray, y: np.ndarray, layout: str) -> None:
    np.savez(path, input=x.astype(np.float32), output=y.astype(np.float32), layout=np.array(layout))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rnw.goldens", description=__doc__.splitlines()[0])
    ap.add_argument("source", help="torchvision:NAME, timm:NAME, keras:FILE (or a .h5/.keras path), or module:function")
    ap.add_argument("-o", "--out", default="io.npz", help="output .npz (default io.npz)")
    ap.add_argument("--weights", help="weights to load first (.pth state dict for torch, weights file for Keras)")
    ap.add_argument("--save-weights", help="torch: write the model's state dict here (to convert the same weights)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--input-size", default="224x224", help="HxW when the model does not fix it (default 224x224)")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        args.input_size = [int(v) for v in args.input_size.lower().split("x")]
        assert len(args.input_size) == 2 and min(args.input_size) > 0
    except (ValueError, AssertionError):
        ap.error("--input-size must look like 224x224")
    x, y, layout = goldens(args.source, args)
    write_npz(args.out, x, y, layout)
    print(f"{args.out}: input {list(x.shape)} ({layout}), output {list(y.shape)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
