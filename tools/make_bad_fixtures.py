#!/usr/bin/env python3
"""Writes the deliberately broken Keras files the error tests use.

A tiny one-block ResNet is saved by the real tf_keras as fixtures/bad/good.h5 (it converts cleanly);
each other file differs from it in exactly one way, so each test names one reason:
  fixtures/bad/missing-dataset.h5   one kernel dataset deleted
  fixtures/bad/shape-mismatch.h5    model_config says more filters than the kernel has
  fixtures/bad/unknown-layer.h5     GlobalAveragePooling2D renamed to GlobalMaxPooling2D, a layer we do not map
  fixtures/bad/bad-json.h5          model_config is not JSON
  fixtures/bad/external-link.h5     the first kernel is an HDF5 external link into good.h5 (the very same
                                    bytes, so a reader that followed it would succeed: it must refuse)
  fixtures/bad/lzf-kernel.h5        the first kernel (set to zeros, so that LZF compresses it: h5py marks the
                                    filter optional and stores chunks it cannot shrink raw) is compressed with
                                    LZF, HDF5 filter 32000, which h5py registers in its own process but
                                    libhdf5 does not have built in: it must be refused naming the filter, and
                                    no filter plugin may be loaded for it
  fixtures/bad/external-storage.h5  the first kernel's raw data lives in another file, external-storage.bin
                                    (HDF5 external storage; the very same values, so a reader that opened it
                                    would succeed): the libhdf5 child may not open files once the input is
                                    open, so it must be refused
And one that is not broken:
  fixtures/bad/gzip-kernels.h5      every kernel chunked and compressed with shuffle + deflate (filters
                                    built into libhdf5): it must convert to exactly good.h5's values

Run with the fixtures venv (tools/requirements-fixtures.txt):  python tools/make_bad_fixtures.py
(`--only external-storage` writes that file from the existing good.h5 without saving good.h5 again)
"""
import json
import os
import shutil
import sys

import h5py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fixtures", "bad")
GOOD = os.path.join(OUT, "good.h5")
# Not-HDF5 and truncated files are made by the Swift tests themselves from these bytes.


def write_good():
    import tf_keras as keras
    from tf_keras import layers

    keras.utils.set_random_seed(11)
    x_in = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", name="stem_conv")(x_in)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    y = layers.Conv2D(4, 3, padding="same", name="block_conv")(x)
    y = layers.BatchNormalization(name="block_bn")(y)
    y = layers.Add(name="block_add")([x, y])
    y = layers.Activation("relu", name="block_out")(y)
    y = layers.GlobalAveragePooling2D(name="pool")(y)
    out = layers.Dense(3, name="fc")(y)
    keras.Model(x_in, out).save(GOOD)


def copy(name):
    path = os.path.join(OUT, name)
    shutil.copyfile(GOOD, path)
    return path


def config(f):
    raw = f.attrs["model_config"]
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def first_conv(cfg):
    return next(l for l in cfg["config"]["layers"] if l["class_name"] == "Conv2D")


def write_external_storage():
    with h5py.File(copy("external-storage.h5"), "r+") as f:
        name = first_conv(config(f))["config"]["name"]
        group = f["model_weights"][name][name]
        kernel = [k for k in group.keys() if k.startswith("kernel")][0]
        values = group[kernel][()]
        del group[kernel]
        outside = os.path.join(OUT, "external-storage.bin")
        if os.path.exists(outside):
            os.remove(outside)
        # The name is stored relative; libhdf5 resolves it against HDF5_EXTFILE_PREFIX (or the
        # working directory), which the test points at this directory.
        dataset = group.create_dataset(kernel, shape=values.shape, dtype=values.dtype,
                                       external=[("external-storage.bin", 0, h5py.h5f.UNLIMITED)])
        cwd = os.getcwd()
        os.chdir(OUT)
        try:
            dataset[...] = values
        finally:
            os.chdir(cwd)


def main():
    os.makedirs(OUT, exist_ok=True)
    if sys.argv[1:] == ["--only", "external-storage"]:
        write_external_storage()
        return
    write_good()

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

    with h5py.File(copy("external-link.h5"), "r+") as f:
        name = first_conv(config(f))["config"]["name"]
        group = f["model_weights"][name][name]
        kernel = [k for k in group.keys() if k.startswith("kernel")][0]
        target = group[kernel].name
        del group[kernel]
        group[kernel] = h5py.ExternalLink("good.h5", target)

    with h5py.File(copy("lzf-kernel.h5"), "r+") as f:
        name = first_conv(config(f))["config"]["name"]
        group = f["model_weights"][name][name]
        kernel = [k for k in group.keys() if k.startswith("kernel")][0]
        values = group[kernel][()] * 0
        del group[kernel]
        group.create_dataset(kernel, data=values, chunks=values.shape, compression="lzf")

    with h5py.File(copy("gzip-kernels.h5"), "r+") as f:
        for layer in f["model_weights"].values():
            for group in layer.values():
                for key in [k for k in group.keys() if k.startswith("kernel")]:
                    values = group[key][()]
                    del group[key]
                    group.create_dataset(key, data=values, chunks=values.shape, shuffle=True,
                                         compression="gzip", compression_opts=6)

    write_external_storage()

    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
