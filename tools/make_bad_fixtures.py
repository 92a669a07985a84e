#!/usr/bin/env python3
"""Writes the hand-made bad Keras files the error tests use, from one good committed fixture.

Each output differs from the good file in exactly one way, so each test names one reason:
  fixtures/bad/not-hdf5.h5          random bytes with an .h5 name
  fixtures/bad/truncated.h5         the good file cut in the middle
  fixtures/bad/missing-dataset.h5   one kernel dataset deleted
  fixtures/bad/shape-mismatch.h5    model_config says more filters than the kernel has
  fixtures/bad/unknown-layer.h5     GlobalAveragePooling2D renamed to GlobalMaxPooling2D, a layer we do not map
  fixtures/bad/bad-json.h5          model_config is not JSON

Run with the fixtures venv (tools/requirements-fixtures.txt):  python tools/make_bad_fixtures.py
"""
import json
import os
import shutil

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = os.path.join(ROOT, "fixtures", "keras", "seed-keras", "tfkeras2.model.h5")
OUT = os.path.join(ROOT, "fixtures", "bad")


def copy(name):
    path = os.path.join(OUT, name)
    shutil.copyfile(GOOD, path)
    return path


def config(f):
    raw = f.attrs["model_config"]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def first_conv(cfg):
    return next(l for l in cfg["config"]["layers"] if l["class_name"] == "Conv2D")


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    with open(os.path.join(OUT, "not-hdf5.h5"), "wb") as f:
        f.write(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())

    data = open(GOOD, "rb").read()
    with open(os.path.join(OUT, "truncated.h5"), "wb") as f:
        f.write(data[: len(data) // 2])

    with h5py.File(copy("missing-dataset.h5"), "r+") as f:
        name = first_conv(config(f))["config"]["name"]
        group = f["model_weights"][name][name]
        kernel = [k for k in group.keys() if k.startswith("kernel")][0]
        del group[kernel]

    with h5py.File(copy("shape-mismatch.h5"), "r+") as f:
        cfg = config(f)
        first_conv(cfg)["config"]["filters"] += 1
        f.attrs["model_config"] = json.dumps(cfg)

    with h5py.File(copy("unknown-layer.h5"), "r+") as f:
        cfg = config(f)
        for layer in cfg["config"]["layers"]:
            if layer["class_name"] == "GlobalAveragePooling2D":
                layer["class_name"] = "GlobalMaxPooling2D"
                break
        f.attrs["model_config"] = json.dumps(cfg)

    with h5py.File(copy("bad-json.h5"), "r+") as f:
        f.attrs["model_config"] = '{"class_name": "Functional", "config": {'

    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
