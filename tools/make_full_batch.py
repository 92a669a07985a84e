#!/usr/bin/env python3
"""Write a larger golden batch for a full-size model made by `make_fixtures.py --full`.

    venv-tf/bin/python tools/make_full_batch.py OUTDIR/keras-applications-resnet50 --batch 32

Loads `tfkeras2.model.h5` from that folder with tf_keras (the framework that wrote it), runs a
batch of standard-normal inputs drawn from a fixed seed, and writes `io-<batch>.npz` (input NHWC,
output, layout) beside it. The dtype size/agreement table in docs/BENCHMARKS.md is measured on this file.
Outputs stay outside the repository (about 20 MB for 32 inputs at 224x224).
"""
import argparse
import os
from pathlib import Path

import numpy as np

SEED = 20240532  # any fixed value; only reproducibility matters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    folder = Path(a.folder).resolve()
    if Path(__file__).resolve().parent.parent in folder.parents:
        raise SystemExit("the output must be outside the repository")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tf_keras as K

    model = K.models.load_model(str(folder / "tfkeras2.model.h5"), compile=False)
    h, w, c = model.input_shape[1:]
    x = np.random.default_rng(SEED).standard_normal((a.batch, h, w, c)).astype(np.float32)
    y = np.concatenate([np.asarray(model(x[i:i + 8], training=False), dtype=np.float32)
                        for i in range(0, a.batch, 8)])
    out = folder / f"io-{a.batch}.npz"
    np.savez_compressed(out, input=x, output=y, layout=np.array("NHWC"))
    top = np.sort(y, axis=1)
    print(f"{out}: output {y.shape}, distinct top-1 classes {len(set(y.argmax(1)))}, "
          f"smallest top-1/top-2 gap {float(np.min(top[:, -1] - top[:, -2])):.3e}")


if __name__ == "__main__":
    main()
