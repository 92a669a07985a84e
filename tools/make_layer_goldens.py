#!/usr/bin/env python3
"""Adds per-layer activations, computed by the real Keras 3, to the committed Keras fixture goldens.

For each model folder in fixtures/keras (except nested models, whose inner layers are not reachable
from the outer graph), the Keras 3 `.keras` file is loaded, and `io.npz` gains arrays named
`layer:<canonical module name>` holding that module's output for the stored `input` (NHWC, the
golden's layout). The canonical names follow the project's rule (see the KerasMapping DocC article):
  layer:conv1          output of the first convolution, when it has no activation inside
  layer:layer{S}.{B}   output of a whole residual block: its Add, then the ReLU layers that follow it
Stages start at 1 and a new stage begins where a block's output channel count changes; blocks
count from 0. The stored `output` is recomputed and must match the existing one, so the goldens stay
the ones in MANIFEST.json.

Run with the fixtures venv:  python tools/make_layer_goldens.py
"""
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures", "keras")
MODELS = ["kapp-resnet-v1", "kapp-resnet-v2", "seed-keras"]


def producers(layer):
    node = layer._inbound_nodes[0]
    return [t._keras_history.operation for t in node.input_tensors]


def is_relu(layer):
    if isinstance(layer, keras.layers.ReLU):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.get_config()["activation"] == "relu"


def checkpoints(model):
    layers = model.layers
    consumers = {id(l): [] for l in layers}
    for l in layers:
        if l._inbound_nodes:
            for p in producers(l) if not isinstance(l, keras.layers.InputLayer) else []:
                consumers.setdefault(id(p), []).append(l)
    names = []
    convs = [l for l in layers if isinstance(l, keras.layers.Conv2D)]
    if convs and convs[0].get_config()["activation"] == "linear":
        names.append(("conv1", convs[0]))
    stage, block, previous = 0, 0, None
    for add in [l for l in layers if isinstance(l, keras.layers.Add)]:
        out = add
        while len(consumers.get(id(out), [])) == 1 and is_relu(consumers[id(out)][0]):
            out = consumers[id(out)][0]
        channels = out.output.shape[-1]
        if previous is None or channels != previous:
            stage, block = stage + 1, 0
        names.append((f"layer{stage}.{block}", out))
        block += 1
        previous = channels
    return names


def main():
    for name in MODELS:
        folder = os.path.join(FIXTURES, name)
        model = keras.models.load_model(os.path.join(folder, "keras3.keras"), compile=False)
        points = checkpoints(model)
        probe = keras.Model(model.inputs, [l.output for _, l in points] + [model.output])
        io = dict(np.load(os.path.join(folder, "io.npz")))
        outs = probe(io["input"], training=False)
        out = np.asarray(outs[-1], dtype=np.float32)
        diff = float(np.max(np.abs(out - io["output"])))
        if diff > 1e-6:
            sys.exit(f"{name}: recomputed output differs from the committed golden by {diff}")
        arrays = {k: v for k, v in io.items() if not k.startswith("layer:")}
        for (canonical, _), value in zip(points, outs[:-1]):
            arrays[f"layer:{canonical}"] = np.asarray(value, dtype=np.float32)
        np.savez_compressed(os.path.join(folder, "io.npz"), **arrays)
        print(name, [c for c, _ in points], f"output diff {diff:.2e}")


if __name__ == "__main__":
    main()
