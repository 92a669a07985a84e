"""python -m rnw MODEL.rnw [--npz OUT.npz] [--no-verify] [--json]

Prints the file's version, model family and tensor table after checking it (every tensor checksum
unless --no-verify); --npz writes every tensor as float32 (float16/bfloat16 widened, int8
dequantised, as the Swift reader does). Exit status 3 for a file that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from . import RNWError, RNWFile, checksum_backend


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rnw", description="Check and summarise a .rnw weight file.")
    ap.add_argument("file")
    ap.add_argument("--npz", help="write every tensor as float32 into this .npz")
    ap.add_argument("--no-verify", action="store_true", help="skip the per-tensor checksums")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args(argv)
    try:
        f = RNWFile(a.file, verify=not a.no_verify)
    except RNWError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    with f:
        if a.json:
            print(json.dumps({"file": a.file, "version": list(f.version), "spec": f.spec, "metadata": f.metadata,
                              "provenance": f.provenance, "parity": f.parity,
                              "tensors": [{"name": e.name, "dtype": e.dtype, "shape": list(e.shape)} for e in f.infos()]},
                             indent=1))
        else:
            verified = "not verified" if a.no_verify else f"all checksums verified ({checksum_backend()})"
            print(f"{a.file}: rnw {f.version[0]}.{f.version[1]}, {f.spec.get('family')}, "
                  f"{f.spec.get('classes')} classes, {len(f)} tensors, {verified}")
            for e in f.infos():
                print(f"  {e.name:40s} {e.dtype:4s} {list(e.shape)}")
        if a.npz:
            np.savez(a.npz, **{n: f.float32(n) for n in f.names()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
