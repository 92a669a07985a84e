#!/usr/bin/env python3
"""Write the Keras fixtures for recognising structures without a model config
(`fixtures/recognition-keras/`), each with an `io.npz` golden, plus that folder's MANIFEST.json.

Setup (once; a virtual environment outside the repository):

    python3 -m venv ../venv-tf
    ../venv-tf/bin/pip install -r tools/requirements-fixtures.txt

Run from the package root:

    ../venv-tf/bin/python tools/make_recognition_keras_fixtures.py

It refuses to run when the installed versions differ from tools/requirements-fixtures.txt.

Files written (every one by the real framework; nothing hand-made except where said):
  kerasio-v1-d14.h5        tf_keras `save_weights` (legacy HDF5, no config, generic names conv2d_N) of the
                           keras.io CIFAR ResNet v1, depth 14 (2 basic blocks per stage), first width 4
  kerasio-v2-d20.h5        the same for the keras.io CIFAR ResNet v2, depth 20 (2 bottleneck blocks per
                           stage), first width 4
  kapp-tiny-logits.weights.h5
                           Keras 3 `save_weights` of a keras.applications ResNet (its own `ResNet` and
                           `stack_residual_blocks_v1`, 7x7 stem, two stacks of one bottleneck block, widths
                           4 and 8) built with `classifier_activation=None`, so its goldens are logits
  config-dict-refs.h5      tf_keras full-model `.h5` of the keras.io ResNet v1 depth 8 (width 4) whose
                           `model_config` attribute is then rewritten with h5py: `input_layers` as a dict
                           `{"image": ["input_1", 0, 0]}` and `output_layers` as a Keras 3 tensor object
                           `{"class_name": "__keras_tensor__", "config": {"keras_history": [...]}}`; the
                           weights are untouched. Tests that the config reader accepts those forms.

The keras.io builders below are written from the published description of the keras.io example
"Trains a ResNet on the CIFAR10 dataset" (resnet_layer / resnet_v1 / resnet_v2): conv with bias and
`same` padding, BatchNormalization with Keras' default epsilon 1e-3, v1 = conv-BN-ReLU pairs with the
stride on the first conv of the first block of stages 2 and 3 and a 1x1 projection conv without BN; v2 =
BN-ReLU-conv bottlenecks whose first block of every stage has a 1x1 projection conv reading the block
input, the first block of the first stage without BN-ReLU before its first conv, and BN-ReLU before the
pool; both end with AveragePooling2D(8), Flatten and a softmax Dense. Only the widths are reduced.

Weights: Keras' own initialisers from a fixed seed, then gamma ~ U(0.5, 1.5), beta ~ N(0, 0.2), conv
biases ~ N(0, 0.05). BatchNorm moving statistics are calibrated, not random: one forward pass in
training mode with momentum 0 over 64 synthetic natural-looking images (1/f-spectrum noise, per image
contrast and colour cast), so moving_mean/moving_variance are the statistics each BN really sees on
such images. The classifier is then scaled so the logits' standard deviation on those images is 4
(peaked softmax outputs, which make a wrong structure show in the goldens).

Goldens (`io.npz` next to each file, same base name + `.io.npz`): `input` float32 NHWC
`numpy.random.default_rng(20240601).standard_normal((2, 32, 32, 3))`, `output` =
`model(input, training=False)`, `layout` = 'NHWC'. Each worker reloads its saved file into a fresh model
and checks the output is identical.

tf_keras and Keras 3 must not share a process: the top level imports no ML framework and runs one
subprocess per worker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "fixtures" / "recognition-keras"
SEED = 20240601


def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "tools" / "requirements-fixtures.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "==" in line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def check_versions() -> dict[str, str]:
    from importlib.metadata import version
    pins = pinned_versions()
    found = {name: version(name) for name in pins}
    wrong = {n: (found[n], pins[n]) for n in pins if found[n] != pins[n]}
    if wrong:
        sys.exit(f"installed versions differ from tools/requirements-fixtures.txt: {wrong}")
    return found


def natural_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """1/f-spectrum noise per channel with a shared luminance field, per-image contrast and colour cast."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0 / max(h, w)
    def field():
        spec = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))) / f
        x = np.fft.ifft2(spec).real
        return (x - x.mean()) / (x.std() + 1e-8)
    out = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        lum = field()
        for c in range(3):
            out[i, :, :, c] = 0.8 * lum + 0.45 * field()
        out[i] = out[i] * rng.uniform(0.6, 1.4) + rng.normal(0, 0.3, size=3)
    return out


def golden_input() -> np.ndarray:
    return np.random.default_rng(SEED).standard_normal((2, 32, 32, 3)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Workers (each in its own process)


def perturb_and_calibrate(model, keras_mod, images, seed, bn_class, dense_class, conv_class):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, bn_class):
            g, b, m, v = [w.numpy() if hasattr(w, "numpy") else np.asarray(w) for w in layer.weights]
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype(np.float32),
                               rng.normal(0, 0.2, b.shape).astype(np.float32), m, v])
        elif isinstance(layer, conv_class) and len(layer.get_weights()) == 2:
            k, b = layer.get_weights()
            layer.set_weights([k, rng.normal(0, 0.05, b.shape).astype(np.float32)])
    bns = [l for l in model.layers if isinstance(l, bn_class)]
    saved = [l.momentum for l in bns]
    for l in bns:
        l.momentum = 0.0
    model(images, training=True)
    for l, m in zip(bns, saved):
        l.momentum = m
    # Scale the classifier so the logits have std 4 on the calibration images.
    dense = [l for l in model.layers if isinstance(l, dense_class)][-1]
    features = np.asarray(keras_mod.Model(model.inputs, dense.input)(images, training=False))
    k, b = dense.get_weights()
    s = 4.0 / float((features @ k + b).std())
    dense.set_weights([k * s, b * s])


def worker_tfkeras(out: Path) -> dict:
    import tf_keras as keras
    from tf_keras import layers
    import tensorflow as tf
    tf.random.set_seed(SEED)
    keras.utils.set_random_seed(SEED)

    def resnet_layer(inputs, num_filters=16, kernel_size=3, strides=1, activation="relu",
                     batch_normalization=True, conv_first=True):
        conv = layers.Conv2D(num_filters, kernel_size=kernel_size, strides=strides, padding="same",
                             kernel_initializer="he_normal")
        x = inputs
        if conv_first:
            x = conv(x)
            if batch_normalization:
                x = layers.BatchNormalization()(x)
            if activation is not None:
                x = layers.Activation(activation)(x)
        else:
            if batch_normalization:
                x = layers.BatchNormalization()(x)
            if activation is not None:
                x = layers.Activation(activation)(x)
            x = conv(x)
        return x

    def resnet_v1(depth, num_filters=16, num_classes=10):
        num_res_blocks = (depth - 2) // 6
        inputs = layers.Input(shape=(32, 32, 3))
        x = resnet_layer(inputs, num_filters=num_filters)
        for stack in range(3):
            for res_block in range(num_res_blocks):
                strides = 2 if stack > 0 and res_block == 0 else 1
                y = resnet_layer(x, num_filters=num_filters, strides=strides)
                y = resnet_layer(y, num_filters=num_filters, activation=None)
                if stack > 0 and res_block == 0:
                    x = resnet_layer(x, num_filters=num_filters, kernel_size=1, strides=strides,
                                     activation=None, batch_normalization=False)
                x = layers.add([x, y])
                x = layers.Activation("relu")(x)
            num_filters *= 2
        x = layers.AveragePooling2D(pool_size=8)(x)
        y = layers.Flatten()(x)
        outputs = layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal")(y)
        return keras.Model(inputs=inputs, outputs=outputs)

    def resnet_v2(depth, num_filters_in=16, num_classes=10):
        num_res_blocks = (depth - 2) // 9
        inputs = layers.Input(shape=(32, 32, 3))
        x = resnet_layer(inputs, num_filters=num_filters_in, conv_first=True)
        for stage in range(3):
            for res_block in range(num_res_blocks):
                activation, batch_normalization, strides = "relu", True, 1
                if stage == 0:
                    num_filters_out = num_filters_in * 4
                    if res_block == 0:
                        activation, batch_normalization = None, False
                else:
                    num_filters_out = num_filters_in * 2
                    if res_block == 0:
                        strides = 2
                y = resnet_layer(x, num_filters=num_filters_in, kernel_size=1, strides=strides,
                                 activation=activation, batch_normalization=batch_normalization, conv_first=False)
                y = resnet_layer(y, num_filters=num_filters_in, conv_first=False)
                y = resnet_layer(y, num_filters=num_filters_out, kernel_size=1, conv_first=False)
                if res_block == 0:
                    x = resnet_layer(x, num_filters=num_filters_out, kernel_size=1, strides=strides,
                                     activation=None, batch_normalization=False)
                x = layers.add([x, y])
            num_filters_in = num_filters_out
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.AveragePooling2D(pool_size=8)(x)
        y = layers.Flatten()(x)
        outputs = layers.Dense(num_classes, activation="softmax", kernel_initializer="he_normal")(y)
        return keras.Model(inputs=inputs, outputs=outputs)

    images = natural_images(64, 32, 32, SEED + 1)
    x = golden_input()
    results = {}
    specs = [
        ("kerasio-v1-d14", lambda: resnet_v1(14, num_filters=4), "weights"),
        ("kerasio-v2-d20", lambda: resnet_v2(20, num_filters_in=4), "weights"),
        ("config-dict-refs", lambda: resnet_v1(8, num_filters=4), "model"),
    ]
    for i, (name, build, kind) in enumerate(specs):
        keras.backend.clear_session()
        keras.utils.set_random_seed(SEED + 10 * i)
        model = build()
        perturb_and_calibrate(model, keras, images, SEED + 10 * i + 1, layers.BatchNormalization,
                              layers.Dense, layers.Conv2D)
        y = model(x, training=False).numpy()
        path = out / f"{name}.h5"
        if kind == "weights":
            model.save_weights(str(path), save_format="h5")
            keras.backend.clear_session()
            again = build()
            again.load_weights(str(path))
        else:
            model.save(str(path), save_format="h5")
            again = keras.models.load_model(str(path), compile=False)
            rewrite_refs(path)
        y2 = again(x, training=False).numpy()
        if not np.array_equal(y, y2):
            sys.exit(f"{name}: reloaded model differs by {np.abs(y - y2).max()}")
        np.savez(out / f"{name}.io.npz", input=x, output=y.astype(np.float32), layout=np.array("NHWC"))
        results[name] = {"layers": [l.name for l in model.layers], "params": int(model.count_params())}
    return results


def rewrite_refs(path: Path) -> None:
    """Writes the model's input_layers/output_layers in two other forms Keras configs use."""
    import h5py
    with h5py.File(path, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        c = cfg["config"]
        (inp,) = c["input_layers"]
        (outp,) = c["output_layers"]
        c["input_layers"] = {"image": inp}
        c["output_layers"] = {"class_name": "__keras_tensor__", "config": {"shape": [None, 10], "dtype": "float32",
                                                                          "keras_history": outp}}
        f.attrs["model_config"] = json.dumps(cfg).encode()


def worker_keras3(out: Path) -> dict:
    import keras
    from keras import layers
    from keras.src.applications.resnet import ResNet, stack_residual_blocks_v1
    keras.utils.set_random_seed(SEED + 100)

    def build():
        def stack_fn(x):
            x = stack_residual_blocks_v1(x, 4, 1, stride1=1, name="conv2")
            return stack_residual_blocks_v1(x, 8, 1, name="conv3")
        return ResNet(stack_fn, preact=False, use_bias=True, include_top=True, weights=None,
                      input_shape=(32, 32, 3), classes=10, classifier_activation=None, name="resnet_tiny")

    images = natural_images(64, 32, 32, SEED + 1)
    x = golden_input()
    model = build()
    perturb_and_calibrate(model, keras, images, SEED + 101, layers.BatchNormalization, layers.Dense, layers.Conv2D)
    y = np.asarray(model(x, training=False))
    path = out / "kapp-tiny-logits.weights.h5"
    model.save_weights(str(path))
    again = build()
    again.load_weights(str(path))
    y2 = np.asarray(again(x, training=False))
    if not np.array_equal(y, y2):
        sys.exit(f"kapp-tiny-logits: reloaded model differs by {np.abs(y - y2).max()}")
    np.savez(out / "kapp-tiny-logits.io.npz", input=x, output=y.astype(np.float32), layout=np.array("NHWC"))
    return {"kapp-tiny-logits": {"layers": [l.name for l in model.layers], "params": int(model.count_params())}}


STRUCTURE = {
    "kerasio-v1-d14.h5": "keras.io CIFAR ResNet v1 depth 14: 3x3 stem conv(bias)-BN-ReLU, 3 stages x 2 basic blocks "
                         "(widths 4/8/16), stride 2 on the first 3x3 conv of the first block of stages 2-3, 1x1 "
                         "stride-2 projection conv with bias and no BN, ReLU after each add, TF 'same' padding, BN eps "
                         "1e-3, AveragePooling2D(8) + Flatten + Dense softmax",
    "kerasio-v2-d20.h5": "keras.io CIFAR ResNet v2 depth 20: 3x3 stem conv-BN-ReLU, 3 stages x 2 bottleneck blocks "
                         "(BN-ReLU-conv; widths in 4/16/32, out 16/32/64), stride 2 on the first 1x1 conv of the first "
                         "block of stages 2-3, 1x1 projection conv (no BN) reading the block input in the first block "
                         "of every stage, no BN-ReLU before the first conv of the first block, no ReLU after adds, "
                         "final BN-ReLU, AveragePooling2D(8) + Flatten + Dense softmax",
    "kapp-tiny-logits.weights.h5": "keras.applications ResNet v1 code (7x7/2 stem conv-BN-ReLU, 3x3/2 max pool, "
                                   "stacks of 1 bottleneck block at widths 4 and 8, out 16 and 32, stride on the first "
                                   "1x1 conv), Keras 3 .weights.h5, classifier_activation=None: the Dense outputs logits",
    "config-dict-refs.h5": "keras.io CIFAR ResNet v1 depth 8 (widths 4/8/16) full model; model_config rewritten so "
                           "input_layers is {\"image\": [\"input_1\", 0, 0]} and output_layers a __keras_tensor__ object",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["tfkeras", "keras3"])
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    if args.worker:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if args.worker == "keras3":
            os.environ["KERAS_BACKEND"] = "tensorflow"
        result = worker_tfkeras(out) if args.worker == "tfkeras" else worker_keras3(out)
        (out / f".{args.worker}.json").write_text(json.dumps(result))
        return
    versions = check_versions()
    out.mkdir(parents=True, exist_ok=True)
    info = {}
    for w in ["tfkeras", "keras3"]:
        subprocess.run([sys.executable, __file__, "--worker", w, "--out", str(out)], check=True)
        p = out / f".{w}.json"
        info.update(json.loads(p.read_text()))
        p.unlink()
    files = {}
    for name in STRUCTURE:
        stem = name.split(".")[0]
        entry = {"structure": STRUCTURE[name], "params": info[stem]["params"], "layers": len(info[stem]["layers"])}
        for f in [name, f"{stem}.io.npz"]:
            entry.setdefault("sha256", {})[f] = hashlib.sha256((out / f).read_bytes()).hexdigest()
        files[name] = entry
    manifest = {
        "written_by": "tools/make_recognition_keras_fixtures.py",
        "versions": versions,
        "golden_input": "numpy.random.default_rng(20240601).standard_normal((2, 32, 32, 3)) float32, NHWC, fed as is",
        "files": files,
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum((out / f).stat().st_size for f in os.listdir(out))
    print(f"wrote {len(files)} fixtures, {total} bytes in {out}")


if __name__ == "__main__":
    main()
