#!/usr/bin/env python3
"""Check that the rnw Python package reads a float32 .rnw made from a PyTorch state dict bit for bit.

    resnet-convert convert SOURCE.pth MODEL.rnw
    venv-torch/bin/python tools/check_rnw_py.py SOURCE.pth MODEL.rnw [--no-verify]

Loads SOURCE.pth with torch itself (`weights_only=True`; a `state_dict`/`model` wrapper and
`module.` prefixes are unwrapped as resnet-convert does), reads MODEL.rnw with the `rnw` package
in python/ (from the source tree; checksums verified unless --no-verify, with the xxhash package when
installed, else numpy, a few seconds per 100 MB), and compares every tensor: same name, float32 in
the file, same shape, identical bytes.
Source entries that the .rnw does not hold must be `num_batches_tracked` counters (BN bookkeeping
that resnet-convert ignores, as its mapping report says); anything else missing fails the check.

This covers torchvision-named state dicts, whose names are already canonical. Exit status: 0 when
every tensor matches, 1 on any difference, 3 when a file cannot be read.
Pinned versions: tools/requirements-torch-fixtures.txt.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "python", "src")
import rnw  # noqa: E402  (the package in python/src, not tools/rnw.py)


def source_tensors(path):
    """The state dict in `path` as {name: float32-or-other numpy array}, unwrapped."""
    import torch
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    out = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in ("module.", "_orig_mod."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        out[name] = value.detach().contiguous().numpy()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("rnw")
    ap.add_argument("--no-verify", action="store_true", help="skip the per-tensor checksums")
    a = ap.parse_args()
    try:
        src = source_tensors(a.source)
        t0 = time.time()
        f = rnw.open(a.rnw, verify=not a.no_verify)
        read_s = time.time() - t0
    except (rnw.RNWError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3

    problems = []
    compared = elements = 0
    for name in f.names():
        e = f.info(name)
        if name not in src:
            problems.append(f"{name}: in the .rnw but not in the source")
            continue
        s = src[name]
        if e.dtype != "f32":
            problems.append(f"{name}: stored as {e.dtype}, this check needs a float32 file")
            continue
        if s.dtype != np.float32:
            problems.append(f"{name}: source dtype is {s.dtype}, not float32")
            continue
        r = f.float32(name)
        if r.dtype != np.float32 or list(r.shape) != list(s.shape):
            problems.append(f"{name}: read {r.dtype} {list(r.shape)}, source float32 {list(s.shape)}")
            continue
        if r.tobytes() != s.astype("<f4").tobytes():
            bad = int(np.count_nonzero(r.view(np.uint32) != s.astype("<f4").view(np.uint32)))
            problems.append(f"{name}: {bad} of {s.size} values differ in their bits")
            continue
        compared += 1
        elements += s.size
    held = set(f.names())
    left = sorted(n for n in src if n not in held)
    unexplained = [n for n in left if not n.endswith("num_batches_tracked")]
    problems += [f"{n}: in the source but not in the .rnw" for n in unexplained]

    print(f"{a.rnw}: {len(f)} tensors read by the rnw package in {read_s:.2f} s"
          + (" (checksums not verified)" if a.no_verify else f" (every checksum verified, {rnw.checksum_backend()})"))
    print(f"{a.source}: {len(src)} tensors; {len(left) - len(unexplained)} num_batches_tracked counters not stored")
    print(f"bit-identical: {compared} tensors, {elements:,} float32 values")
    for p in problems:
        print(f"DIFFERENT: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
