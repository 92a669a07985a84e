#!/usr/bin/env python3
"""Write the committed Keras fixtures (`fixtures/keras/`) and `fixtures/MANIFEST.json`.

Every fixture file here is written by the real framework (tf_keras 2 or Keras 3); nothing is
hand-made. The Swift tests read these files and never run Python.

Setup (once; any Python 3.11 with PyPI access):

    python3 -m venv venv-tf
    venv-tf/bin/pip install -r tools/requirements-fixtures.txt

Run from the package root:

    venv-tf/bin/python tools/make_fixtures.py                 # small fixtures -> fixtures/
    venv-tf/bin/python tools/make_fixtures.py --full OUTDIR   # full-size models (about 300 MB) -> OUTDIR,
                                                              # never into the repository
    venv-tf/bin/python tools/make_fixtures.py --all-kinds     # every kind of every model (7.6 MB; explore only)

It refuses to run when the installed versions differ from tools/requirements-fixtures.txt, because the
committed files record those versions (`--allow-other-versions` overrides, for experiments only).

The script is re-runnable: it rewrites every file it owns. Weights and inputs come from fixed seeds, so
the arrays (weights, `io.npz`) are identical between runs. The `.keras` zips still change bytes on every
run because Keras writes the save date into their `metadata.json`, so their sha256 changes too.

How it works. The top level imports no ML framework. It starts one subprocess per writer
(`--worker tfkeras2`, then `--worker keras3`), because tf_keras and Keras 3 must not share a process.
Each worker builds every model with its own framework, sets the same weights (drawn with numpy from a
seed derived from the layer's path, so both writers get identical numbers), runs the golden input,
saves the committed file kinds (`COMMITTED`; HDF5 overhead makes the full matrix too big), then loads
each file back in the same framework and runs the input again. Two more subprocesses then try to open
each file with the OTHER framework (informational: recorded in the manifest as `opened_by_other_writer`,
output diff or error). The top level compares all outputs with the golden (the Keras 3 in-memory model),
fails if anything differs by more than TOLERANCE, and writes `io.npz` and the manifest.

`--full OUTDIR` writes, with tf_keras only, legacy `.h5` files of the real keras.applications ResNet50 and
ResNet50V2 (weights=None, then randomised) and of the full-size seed model (224x224, 1000 classes), each
with an `io.npz` and an OUTDIR/MANIFEST.json.

Models (builders below mirror the structure and layer names of the real code, at reduced size):
  kapp-resnet-v1  keras.applications ResNet50 (v1 bottleneck, stride on the block's first 1x1 conv)
  kapp-resnet-v2  keras.applications ResNet50V2 (pre-activation, stride in the LAST block of a stack)
  seed-keras      the Keras ResNet of the project's seed text (basic blocks, auto layer names)
  nested-keras3   a small ResNet whose stages and blocks are nested Functional models; also has a
                  grouped Conv2D (groups=2) and a Conv2D with activation="relu" inside the layer
At full size the v1/v2 builders reproduce keras.applications' model config exactly; the Keras 3 worker
checks that on every run (see `check_builders_against_keras_applications`).

BN statistics are randomised (moving_mean ~ N(0, 0.5), moving_variance ~ U(0.5, 2), gamma ~ U(0.5, 1.5),
beta ~ N(0, 0.2)) so that a wrong epsilon, a missing BN or a wrong op order changes the output. The final
Dense is then scaled by a power of two so the golden logits have a std near 2 (see `calibrate_classifier`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# The same draw as the external fixtures' goldens (shared/fixtures-external/EXPECTED.md): NCHW standard
# normal transposed to NHWC, so every 32x32x3 fixture in the project sees the same numbers.
INPUT_SEED = 20240601
WEIGHT_SEED = 1234

# Model name -> (input HWC, output kind). Sizes chosen so that each saved file stays near 100 KB.
MODELS = {
    "kapp-resnet-v1": ((64, 64, 3), "probabilities"),
    "kapp-resnet-v2": ((64, 64, 3), "probabilities"),
    "seed-keras": ((32, 32, 3), "probabilities"),
    "nested-keras3": ((32, 32, 3), "logits"),
}

# File kinds each writer produces: (file suffix, manifest kind).
WRITER_KINDS = {
    "tfkeras2": [
        ("model.h5", "keras-h5-model"),
        ("legacy-weights.h5", "keras-h5-weights"),
        ("keras", "keras-v3-zip"),
        ("weights.h5", "keras-v3-weights"),
    ],
    "keras3": [
        ("model.h5", "keras-h5-model"),
        ("keras", "keras-v3-zip"),
        ("weights.h5", "keras-v3-weights"),
    ],
}
# Committed subset. HDF5 costs about 1-3 KB per layer even for layers without weights (every layer gets
# groups), so a ~100-layer model is 200-400 KB whatever its widths; writing every kind of every model
# came to 7.6 MB. The full matrix is kept for kapp-resnet-v1 and nested-keras3; the other two keep the
# kinds most often met in the wild. `--all-kinds` writes everything (for exploring; do not commit).
COMMITTED = {
    "kapp-resnet-v1": {("tfkeras2", s) for s, _ in WRITER_KINDS["tfkeras2"]}
    | {("keras3", s) for s, _ in WRITER_KINDS["keras3"]},
    "kapp-resnet-v2": {("tfkeras2", "model.h5"), ("tfkeras2", "legacy-weights.h5"),
                       ("keras3", "keras"), ("keras3", "weights.h5")},
    "seed-keras": {("tfkeras2", "model.h5"), ("keras3", "model.h5"), ("keras3", "keras")},
    "nested-keras3": {("tfkeras2", "model.h5"), ("tfkeras2", "legacy-weights.h5"), ("tfkeras2", "keras"),
                      ("keras3", "model.h5"), ("keras3", "keras"), ("keras3", "weights.h5")},
}
GOLDEN_WRITER = "keras3"
# Two float32 implementations of the same graph on the same CPU; anything above this is a real mismatch.
TOLERANCE = 1e-5


def golden_input(hwc: tuple[int, int, int], batch: int = 2) -> np.ndarray:
    h, w, c = hwc
    x = np.random.default_rng(INPUT_SEED).standard_normal((batch, c, h, w)).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


# ----------------------------------------------------------------------------------------------------
# Model builders. `K` is the framework module (tf_keras or keras); both expose layers, Input and Model.
# ----------------------------------------------------------------------------------------------------

BN_EPS_KAPP = 1.001e-5  # keras.applications resnet.py uses this epsilon for every BN


def kapp_resnet(K, stack_fn, preact, use_bias, input_shape, classes, stem_filters, name):
    """The keras.applications `ResNet` wrapper: stem, stacks, head, with its layer names."""
    L = K.layers
    inputs = L.Input(shape=input_shape)
    x = L.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inputs)
    x = L.Conv2D(stem_filters, 7, strides=2, use_bias=use_bias, name="conv1_conv")(x)
    if not preact:
        x = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name="conv1_bn")(x)
        x = L.Activation("relu", name="conv1_relu")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    x = stack_fn(x)
    if preact:
        x = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name="post_bn")(x)
        x = L.Activation("relu", name="post_relu")(x)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(classes, activation="softmax", name="predictions")(x)
    return K.Model(inputs, x, name=name)


def kapp_block_v1(K, x, filters, stride=1, conv_shortcut=True, name=""):
    """Bottleneck v1: the stride sits on the first 1x1 conv; shortcut conv+BN on block 1 only."""
    L = K.layers
    if conv_shortcut:
        shortcut = L.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name=f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = L.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name=f"{name}_1_bn")(x)
    x = L.Activation("relu", name=f"{name}_1_relu")(x)
    x = L.Conv2D(filters, 3, padding="SAME", name=f"{name}_2_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name=f"{name}_2_bn")(x)
    x = L.Activation("relu", name=f"{name}_2_relu")(x)
    x = L.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name=f"{name}_3_bn")(x)
    x = L.Add(name=f"{name}_add")([shortcut, x])
    return L.Activation("relu", name=f"{name}_out")(x)


def kapp_stack_v1(K, x, filters, blocks, stride1=2, name=""):
    x = kapp_block_v1(K, x, filters, stride=stride1, name=f"{name}_block1")
    for i in range(2, blocks + 1):
        x = kapp_block_v1(K, x, filters, conv_shortcut=False, name=f"{name}_block{i}")
    return x


def kapp_block_v2(K, x, filters, stride=1, conv_shortcut=False, name=""):
    """Pre-activation bottleneck: BN+ReLU first; the stride sits on the 3x3 conv (explicit pad, valid)."""
    L = K.layers
    preact = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name=f"{name}_preact_bn")(x)
    preact = L.Activation("relu", name=f"{name}_preact_relu")(preact)
    if conv_shortcut:
        shortcut = L.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    else:
        # Auto-named (max_pooling2d, max_pooling2d_1, ...) exactly as keras.applications leaves it.
        shortcut = L.MaxPooling2D(1, strides=stride)(x) if stride > 1 else x
    x = L.Conv2D(filters, 1, strides=1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name=f"{name}_1_bn")(x)
    x = L.Activation("relu", name=f"{name}_1_relu")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_2_pad")(x)
    x = L.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_2_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=BN_EPS_KAPP, name=f"{name}_2_bn")(x)
    x = L.Activation("relu", name=f"{name}_2_relu")(x)
    x = L.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    return L.Add(name=f"{name}_out")([shortcut, x])


def kapp_stack_v2(K, x, filters, blocks, stride1=2, name=""):
    # Needs blocks >= 2: block 1 carries the conv shortcut, the last block carries the stride.
    x = kapp_block_v2(K, x, filters, conv_shortcut=True, name=f"{name}_block1")
    for i in range(2, blocks):
        x = kapp_block_v2(K, x, filters, name=f"{name}_block{i}")
    return kapp_block_v2(K, x, filters, stride=stride1, name=f"{name}_block{blocks}")


def build_kapp_v1(K, width=2, blocks=(2, 1, 1, 1), stem=8, input_shape=(64, 64, 3), classes=10,
                  name="resnet50"):
    def stack_fn(x):
        x = kapp_stack_v1(K, x, width, blocks[0], stride1=1, name="conv2")
        x = kapp_stack_v1(K, x, 2 * width, blocks[1], name="conv3")
        x = kapp_stack_v1(K, x, 4 * width, blocks[2], name="conv4")
        return kapp_stack_v1(K, x, 8 * width, blocks[3], name="conv5")
    return kapp_resnet(K, stack_fn, False, True, input_shape, classes, stem, name)


def build_kapp_v2(K, width=2, blocks=(2, 2, 2, 2), stem=8, input_shape=(64, 64, 3), classes=10,
                  name="resnet50v2"):
    def stack_fn(x):
        x = kapp_stack_v2(K, x, width, blocks[0], name="conv2")
        x = kapp_stack_v2(K, x, 2 * width, blocks[1], name="conv3")
        x = kapp_stack_v2(K, x, 4 * width, blocks[2], name="conv4")
        return kapp_stack_v2(K, x, 8 * width, blocks[3], stride1=1, name="conv5")
    return kapp_resnet(K, stack_fn, True, True, input_shape, classes, stem, name)


def build_seed(K, base=2, num_block=(2, 2, 2, 2), input_shape=(32, 32, 3), classes=10):
    """The seed's Keras `ResNet.buildNet`/`resblock`, same order of layer creation, so the same auto names
    (conv2d, batch_normalization, activation, add, ... with _N suffixes). Only widths/blocks/sizes differ."""
    L = K.layers

    def resblock(inputs, filters, downsample=False):
        strides = 2 if downsample else 1
        x = L.Conv2D(filters, kernel_size=3, strides=strides, padding="same")(inputs)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        x = L.Conv2D(filters, kernel_size=3, strides=1, padding="same")(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu")(x)
        if downsample:
            inputs = L.Conv2D(filters, kernel_size=1, strides=2, padding="same", activation="relu")(inputs)
        x = L.Add()([inputs, x])
        return L.Activation("relu")(x)

    inputs = L.Input(input_shape)
    x = L.Conv2D(base, kernel_size=7, strides=2, padding="same")(inputs)
    x = L.MaxPool2D(pool_size=(3, 3), strides=2)(x)
    for k in range(4):
        for idx in range(num_block[k]):
            downsample = idx == 0 and k != 0
            x = resblock(x, filters=base * 2**k, downsample=downsample)
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(classes, activation="softmax")(x)
    return K.Model(inputs, outputs)


def build_nested(K, input_shape=(32, 32, 3), classes=10):
    """Top model -> stage sub-models -> block sub-models -> layers (two levels of nested Functional)."""
    L = K.layers

    def block(cin, filters, stride, grouped, name):
        inp = L.Input(shape=(None, None, cin), name=f"{name}_in")
        x = L.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                     groups=2 if grouped else 1, name=f"{name}_conv_a")(inp)
        x = L.BatchNormalization(epsilon=1e-3, name=f"{name}_bn_a")(x)
        x = L.ReLU(name=f"{name}_relu_a")(x)
        x = L.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv_b")(x)
        x = L.BatchNormalization(epsilon=1e-3, name=f"{name}_bn_b")(x)
        if stride != 1 or cin != filters:
            # A conv carrying its own activation, as in the seed's shortcut.
            sc = L.Conv2D(filters, 1, strides=stride, activation="relu", name=f"{name}_shortcut")(inp)
        else:
            sc = inp
        x = L.Add(name=f"{name}_add")([x, sc])
        x = L.ReLU(name=f"{name}_out")(x)
        return K.Model(inp, x, name=name)

    def stage(cin, filters, stride, n, grouped, name):
        inp = L.Input(shape=(None, None, cin), name=f"{name}_in")
        x = inp
        c = cin
        for i in range(n):
            x = block(c, filters, stride if i == 0 else 1, grouped and i == 0, f"{name}_block{i + 1}")(x)
            c = filters
        return K.Model(inp, x, name=name)

    inputs = L.Input(shape=input_shape, name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = L.BatchNormalization(epsilon=1e-3, name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    x = stage(8, 8, 1, 2, False, "stage1")(x)
    x = stage(8, 16, 2, 2, True, "stage2")(x)
    x = stage(16, 32, 2, 1, False, "stage3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(classes, name="logits")(x)
    return K.Model(inputs, x, name="nested_resnet")


BUILDERS = {
    "kapp-resnet-v1": build_kapp_v1,
    "kapp-resnet-v2": build_kapp_v2,
    "seed-keras": build_seed,
    "nested-keras3": build_nested,
}


# ----------------------------------------------------------------------------------------------------
# Deterministic weights.
# ----------------------------------------------------------------------------------------------------

def iter_leaf_layers(model, prefix=""):
    """(path, layer) for every weight-owning non-model layer, recursing into nested models."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Model", "Sequential"):
            yield from iter_leaf_layers(layer, path + "/")
        elif layer.get_weights():
            yield path, layer


def randomise(model) -> None:
    """Give every layer numbers drawn from a seed derived from its path (identical in both frameworks)."""
    for path, layer in iter_leaf_layers(model):
        rng = np.random.default_rng([WEIGHT_SEED, zlib.crc32(path.encode())])
        kind = layer.__class__.__name__
        new = []
        shapes = [w.shape for w in layer.get_weights()]
        if kind == "BatchNormalization":
            gamma, beta, mean, var = shapes
            new = [rng.uniform(0.5, 1.5, gamma), rng.normal(0.0, 0.2, beta),
                   rng.normal(0.0, 0.5, mean), rng.uniform(0.5, 2.0, var)]
        elif kind in ("Conv2D", "Dense"):
            kshape = shapes[0]
            fan_in = int(np.prod(kshape[:-1]))
            std = np.sqrt(2.0 / fan_in) if kind == "Conv2D" else np.sqrt(1.0 / fan_in)
            new = [rng.normal(0.0, std, kshape)]
            if len(shapes) == 2:
                new.append(rng.normal(0.0, 0.1, shapes[1]))
        else:
            raise SystemExit(f"randomise: no rule for layer {path} ({kind})")
        layer.set_weights([w.astype(np.float32) for w in new])


def calibrate_classifier(K, model, x, target_std=2.0) -> float:
    """Scale the final Dense by a power of two so its logits have a std near `target_std`.

    Random deep ResNets grow their activations block by block; at full size the softmax was exactly one-hot
    (probabilities 1.0 and 0.0), which hides every error. A power of two is exact in float32 and is the same
    in both frameworks even when their features differ in the last bit, so both writers keep identical weights.
    """
    dense = model.layers[-1]
    if dense.__class__.__name__ != "Dense":
        raise SystemExit(f"calibrate: last layer of {model.name} is {dense.__class__.__name__}")
    features = np.asarray(K.Model(model.inputs, dense.input)(x, training=False), dtype=np.float64)
    w, b = dense.get_weights()
    std = float(np.std(features @ w + b))
    factor = float(2.0 ** round(np.log2(target_std / std)))
    dense.set_weights([(w * factor).astype(np.float32), (b * factor).astype(np.float32)])
    return factor


# ----------------------------------------------------------------------------------------------------
# Workers (run in their own subprocess).
# ----------------------------------------------------------------------------------------------------

def pinned_versions() -> dict[str, str]:
    pins = {}
    for line in (Path(__file__).resolve().parent / "requirements-fixtures.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            pkg, ver = line.split("==")
            pins[pkg.strip().lower().replace("-", "_")] = ver.strip()
    return pins


def check_versions(versions: dict[str, str]) -> None:
    if os.environ.get("MAKE_FIXTURES_ANY_VERSION") == "1":
        return
    pins = pinned_versions()
    wrong = {k: (v, pins[k]) for k, v in versions.items() if k in pins and v != pins[k]}
    if wrong:
        raise SystemExit(f"installed versions differ from requirements-fixtures.txt (installed, pinned): {wrong}")


def import_framework(writer):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if writer == "tfkeras2":
        import tf_keras as K
        import tensorflow as tf
        tf.random.set_seed(0)
        versions = {"tf_keras": K.__version__, "tensorflow": tf.__version__}
    else:
        os.environ["KERAS_BACKEND"] = "tensorflow"
        import keras as K
        import tensorflow as tf
        versions = {"keras": K.__version__, "tensorflow": tf.__version__, "keras_backend": K.backend.backend()}
    import h5py
    versions["h5py"] = h5py.__version__
    versions["hdf5"] = h5py.version.hdf5_version
    versions["numpy"] = np.__version__
    check_versions(versions)
    return K, versions


def run(model, x) -> np.ndarray:
    return np.asarray(model(x, training=False), dtype=np.float32)


def fresh(K, name, **kw):
    # Resetting the session resets auto-name counters, so a rebuilt model has the same layer names.
    K.backend.clear_session()
    return BUILDERS[name](K, **kw)


def load_file(K, name: str, path: Path, kind: str):
    """Open a saved file in a fresh session: whole-model kinds by load_model, weights kinds into a rebuilt model."""
    if kind in ("keras-h5-model", "keras-v3-zip"):
        K.backend.clear_session()
        return K.models.load_model(str(path), compile=False)
    model = fresh(K, name)
    model.load_weights(str(path))
    return model


def worker(writer: str, outdir: Path, results: Path, all_kinds: bool) -> None:
    K, versions = import_framework(writer)
    report = {"writer": writer, "versions": versions, "files": [], "outputs": {}}
    arrays = {}
    if writer == "keras3":
        report["builder_check"] = check_builders_against_keras_applications(K)
    for name, (hwc, _) in MODELS.items():
        x = golden_input(hwc)
        model = fresh(K, name)
        randomise(model)
        factor = calibrate_classifier(K, model, x)
        y = run(model, x)
        arrays[f"{name}/inmemory"] = y
        report["outputs"][name] = {"params": int(model.count_params()), "classifier_scale": factor}
        mdir = outdir / name
        mdir.mkdir(parents=True, exist_ok=True)
        for suffix, kind in WRITER_KINDS[writer]:
            if not all_kinds and (writer, suffix) not in COMMITTED[name]:
                continue
            path = mdir / f"{writer}.{suffix}"
            if path.exists():
                path.unlink()
            if kind in ("keras-h5-model", "keras-v3-zip"):
                model.save(str(path))
            else:
                model.save_weights(str(path))
            y2 = run(load_file(K, name, path, kind), x)
            arrays[f"{name}/{path.name}"] = y2
            report["files"].append({"model": name, "path": str(path), "kind": kind})
        print(f"[{writer}] {name}: params={model.count_params()} out={y.shape}", flush=True)
    np.savez(results.with_suffix(".npz"), **arrays)
    results.write_text(json.dumps(report, indent=1))


def cross_worker(writer: str, outdir: Path, results: Path) -> None:
    """Open the OTHER writer's files in this framework; record the output or the error (informational)."""
    K, _ = import_framework(writer)
    other = next(w for w in WRITER_KINDS if w != writer)
    report, arrays = {}, {}
    for name, (hwc, _) in MODELS.items():
        x = golden_input(hwc)
        for suffix, kind in WRITER_KINDS[other]:
            path = outdir / name / f"{other}.{suffix}"
            if not path.exists():
                continue
            key = f"{name}/{path.name}"
            try:
                arrays[key] = run(load_file(K, name, path, kind), x)
                report[key] = "ok"
            except Exception as e:  # recorded, not fatal: this only documents interoperability
                report[key] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    np.savez(results.with_suffix(".npz"), **arrays)
    results.write_text(json.dumps(report, indent=1))


def check_builders_against_keras_applications(K) -> dict:
    """At full size the hand-written v1/v2 builders must give keras.applications' exact model config."""
    out = {}
    pairs = [("kapp-resnet-v1", lambda: build_kapp_v1(K, 64, (3, 4, 6, 3), 64, (224, 224, 3), 1000),
              lambda: K.applications.ResNet50(weights=None)),
             ("kapp-resnet-v2", lambda: build_kapp_v2(K, 64, (3, 4, 6, 3), 64, (224, 224, 3), 1000),
              lambda: K.applications.ResNet50V2(weights=None))]
    for name, mine_fn, real_fn in pairs:
        K.backend.clear_session()
        mine = mine_fn().get_config()
        K.backend.clear_session()
        real = real_fn().get_config()
        same = json.dumps(mine, sort_keys=True, default=str) == json.dumps(real, sort_keys=True, default=str)
        if not same:
            raise SystemExit(f"builder for {name} at full size differs from keras.applications")
        out[name] = "full-size builder config == keras.applications config"
    K.backend.clear_session()
    return out


def full_worker(outdir: Path) -> None:
    """Full-size files, tf_keras writer only (the legacy .h5 most published ResNets use)."""
    K, versions = import_framework("tfkeras2")
    entries = []
    jobs = [("keras-applications-resnet50", lambda: K.applications.ResNet50(weights=None), (224, 224, 3)),
            ("keras-applications-resnet50v2", lambda: K.applications.ResNet50V2(weights=None), (224, 224, 3)),
            ("seed-keras-full", lambda: build_seed(K, 64, (3, 4, 6, 3), (224, 224, 3), 1000), (224, 224, 3))]
    for name, fn, hwc in jobs:
        K.backend.clear_session()
        model = fn()
        randomise(model)
        x = golden_input(hwc)
        factor = calibrate_classifier(K, model, x)
        y = run(model, x)
        mdir = outdir / name
        mdir.mkdir(parents=True, exist_ok=True)
        path = mdir / "tfkeras2.model.h5"
        model.save(str(path))
        K.backend.clear_session()
        y2 = run(K.models.load_model(str(path), compile=False), x)
        np.savez_compressed(mdir / "io.npz", input=x, output=y, layout=np.array("NHWC"))
        entries.append({"model": name, "path": str(path.relative_to(outdir)), "kind": "keras-h5-model",
                        "writer": "tfkeras2", "size": path.stat().st_size, "sha256": sha256(path),
                        "params": int(model.count_params()), "golden": f"{name}/io.npz",
                        "input_shape": list(x.shape), "output_shape": list(y.shape),
                        "output_is": "probabilities", "classifier_scale": factor,
                        "output_max_per_row": [float(v) for v in y.max(axis=1)],
                        "reload_max_abs_diff": float(np.max(np.abs(y2 - y)))})
        print(f"[full] {name}: {path.stat().st_size} bytes, reload diff {entries[-1]['reload_max_abs_diff']}",
              flush=True)
    (outdir / "MANIFEST.json").write_text(json.dumps({"versions": versions, "files": entries}, indent=1) + "\n")


# ----------------------------------------------------------------------------------------------------
# Top level (no ML framework imported here).
# ----------------------------------------------------------------------------------------------------

def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def spawn(args: list[str]) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    subprocess.run(cmd, check=True)


def main_small(all_kinds: bool) -> None:
    outdir = FIXTURES / "keras"
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        reports, arrays = {}, {}
        for writer in WRITER_KINDS:
            res = Path(tmp) / f"{writer}.json"
            spawn(["--worker", writer, "--out", str(outdir), "--results", str(res)]
                  + (["--all-kinds"] if all_kinds else []))
            reports[writer] = json.loads(res.read_text())
            with np.load(res.with_suffix(".npz")) as z:
                arrays[writer] = {k: z[k] for k in z.files}
        cross, cross_arrays = {}, {}
        for writer in WRITER_KINDS:
            res = Path(tmp) / f"cross-{writer}.json"
            spawn(["--worker", f"cross-{writer}", "--out", str(outdir), "--results", str(res)])
            cross[writer] = json.loads(res.read_text())
            with np.load(res.with_suffix(".npz")) as z:
                cross_arrays[writer] = {k: z[k] for k in z.files}

    files, model_notes = [], {}
    for name, (hwc, output_is) in MODELS.items():
        x = golden_input(hwc)
        golden = arrays[GOLDEN_WRITER][f"{name}/inmemory"]
        if not np.all(np.isfinite(golden)) or np.allclose(golden[0], golden[1]):
            raise SystemExit(f"{name}: golden output not finite or rows equal")
        golden_path = outdir / name / "io.npz"
        np.savez_compressed(golden_path, input=x, output=golden, layout=np.array("NHWC"))
        inmem = {w: float(np.max(np.abs(arrays[w][f"{name}/inmemory"] - golden))) for w in WRITER_KINDS}
        scales = {r["outputs"][name]["classifier_scale"] for r in reports.values()}
        if len(scales) != 1:
            raise SystemExit(f"{name}: writers chose different classifier scales {scales}")
        if max(inmem.values()) > TOLERANCE:
            raise SystemExit(f"{name}: the two frameworks disagree on the same weights: {inmem}")
        model_notes[name] = {
            "golden": str(golden_path.relative_to(ROOT)),
            "golden_from": f"{GOLDEN_WRITER} in-memory model, model(x, training=False)",
            "params": reports[GOLDEN_WRITER]["outputs"][name]["params"],
            "classifier_scale": {w: r["outputs"][name]["classifier_scale"] for w, r in reports.items()},
            "input_shape": list(x.shape), "output_shape": list(golden.shape), "output_is": output_is,
            "inmemory_max_abs_diff_vs_golden": inmem,
        }
        for writer, rep in reports.items():
            for f in rep["files"]:
                if f["model"] != name:
                    continue
                p = Path(f["path"])
                diff = float(np.max(np.abs(arrays[writer][f"{name}/{p.name}"] - golden)))
                other_loads = {}
                for reader, rep_c in cross.items():
                    key = f"{name}/{p.name}"
                    if key in rep_c:
                        other_loads[reader] = (
                            {"max_abs_diff_vs_golden": float(np.max(np.abs(cross_arrays[reader][key] - golden)))}
                            if rep_c[key] == "ok" else {"error": rep_c[key]})
                if diff > TOLERANCE:
                    raise SystemExit(f"{p}: reloaded output differs from golden by {diff}")
                files.append({
                    "path": str(p.relative_to(ROOT)), "kind": f["kind"], "model": name,
                    "writer": writer, "writer_versions": rep["versions"],
                    "sha256": sha256(p), "size": p.stat().st_size,
                    "golden": str(golden_path.relative_to(ROOT)), "input_shape": list(x.shape),
                    "output_is": output_is,
                    "reload_max_abs_diff_vs_golden": diff,
                    "opened_by_other_writer": other_loads,
                    "notes": NOTES[name] + " | " + KIND_NOTES[(writer, f["kind"])],
                })
    manifest = {
        "generator": "tools/make_fixtures.py",
        "versions": {w: r["versions"] for w, r in reports.items()},
        "input": f"numpy default_rng({INPUT_SEED}).standard_normal((2,C,H,W)) float32, transposed to NHWC",
        "weights": (f"per layer numpy default_rng([{WEIGHT_SEED}, crc32(layer path)]); conv He-normal, "
                    "dense N(0,1/fan_in), bias N(0,0.1); BN gamma U(0.5,1.5), beta N(0,0.2), "
                    "moving_mean N(0,0.5), moving_variance U(0.5,2); then the final Dense (kernel and bias) "
                    "is multiplied by a power of two so the golden logits have std about 2 (classifier_scale)"),
        "tolerance": TOLERANCE,
        "builder_check": reports["keras3"].get("builder_check", {}),
        "models": model_notes,
        "files": files,
    }
    (FIXTURES / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = 0
    for f in files:
        total += f["size"]
        print(f"{f['size']:>9}  {f['path']}  (diff {f['reload_max_abs_diff_vs_golden']:.2e})")
    print(f"total model bytes: {total}")


NOTES = {
    "kapp-resnet-v1": ("reduced keras.applications ResNet50: conv1 8 filters, bottleneck widths 4/8/16/32 "
                       "(outputs x4), blocks [2,1,1,1], 64x64 input, 10 classes; layer names as keras.applications"),
    "kapp-resnet-v2": ("reduced keras.applications ResNet50V2: conv1 8 filters, widths 3/6/12/24 (outputs x4), "
                       "blocks [2,2,2,2], 64x64 input, 10 classes; 1x1 MaxPooling2D shortcuts are auto-named"),
    "seed-keras": ("seed Keras ResNet (basic blocks, no stem BN, TF 'same' stride-2 convs, shortcut Conv2D 1x1 "
                   "s2 relu) with filters 4*2**k, blocks [2,2,2,2], 32x32 input, 10 classes; auto layer names"),
    "nested-keras3": ("stages and blocks are nested Functional models (2 levels); stage2_block1 conv_a has "
                      "groups=2; shortcut Conv2D has activation relu; BN eps 1e-3; Dense logits"),
}


# What a reader meets in each kind (observed in these files; h5ls -r shows it).
KIND_NOTES = {
    ("tfkeras2", "keras-h5-model"): (
        "legacy HDF5; root attrs model_config (JSON), keras_version, backend; /model_weights has attr layer_names; "
        "each layer group has attr weight_names ('conv1_conv/kernel:0'); datasets /model_weights/<layer>/<layer>/"
        "kernel:0. A nested model's group holds all its inner weights flat (<sub>/<inner layer>/kernel:0, no group "
        "per inner sub-model) and lists trainable weights first, then all moving statistics"),
    ("keras3", "keras-h5-model"): (
        "legacy HDF5 written by Keras 3: same tree as tf_keras but dataset and weight_names lose the ':0' "
        "suffix ('conv1_conv/kernel'); config uses batch_shape instead of batch_input_shape"),
    ("tfkeras2", "keras-h5-weights"): (
        "legacy weights-only HDF5 (save_weights('x.h5')): the /model_weights tree at the root; root attrs "
        "layer_names, backend, keras_version; no model_config"),
    ("tfkeras2", "keras-v3-zip"): (
        "zip (stored, not deflated): metadata.json, config.json, model.weights.h5. Inside the h5, groups are NOT "
        "layer names: /layers/<snake_case(class)>[_N]/vars/<i>, N counting per class within each container in "
        "config.json 'layers' order; nested models are /layers/functional[_N]/layers/...; tf_keras writes no "
        "'name' attribute. BN vars 0..3 = gamma, beta, moving_mean, moving_variance"),
    ("keras3", "keras-v3-zip"): (
        "zip (stored): metadata.json, config.json, model.weights.h5 with /layers/<snake_case(class)>[_N]/vars/<i> "
        "as for tf_keras, plus a 'name' attribute (the real layer name) on each vars group"),
    ("tfkeras2", "keras-v3-weights"): (
        "the model.weights.h5 of a .keras zip as a bare file (save_weights('x.weights.h5')); no config, so "
        "the reader must know the architecture; no 'name' attributes"),
    ("keras3", "keras-v3-weights"): (
        "the model.weights.h5 of a .keras zip as a bare file; no config; vars groups carry a 'name' attribute"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", metavar="OUTDIR", help="write full-size models to OUTDIR (outside the repo)")
    ap.add_argument("--all-kinds", action="store_true",
                    help="write every file kind of every model (about 7.6 MB; for exploring, not for committing)")
    ap.add_argument("--worker", choices=list(WRITER_KINDS) + [f"cross-{w}" for w in WRITER_KINDS] + ["full"],
                    help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--results", help=argparse.SUPPRESS)
    ap.add_argument("--allow-other-versions", action="store_true",
                    help="run even if installed versions differ from the pins (never commit the result)")
    a = ap.parse_args()
    if a.allow_other_versions:
        os.environ["MAKE_FIXTURES_ANY_VERSION"] = "1"
    if a.worker == "full":
        full_worker(Path(a.out))
    elif a.worker.startswith("cross-") if a.worker else False:
        cross_worker(a.worker[len("cross-"):], Path(a.out), Path(a.results))
    elif a.worker:
        worker(a.worker, Path(a.out), Path(a.results), a.all_kinds)
    elif a.full:
        out = Path(a.full).resolve()
        if out == ROOT or ROOT in out.parents:
            raise SystemExit("--full output must be outside the repository")
        out.mkdir(parents=True, exist_ok=True)
        spawn(["--worker", "full", "--out", str(out)])
    else:
        main_small(a.all_kinds)


if __name__ == "__main__":
    main()
