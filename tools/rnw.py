#!/usr/bin/env python3
"""The .rnw reader's command line, run from the source tree (numpy only).

    python3 tools/rnw.py MODEL.rnw                 # summary: version, spec family, tensor table
    python3 tools/rnw.py MODEL.rnw --npz OUT.npz   # every tensor as float32 (int8/f16/bf16 widened)
    python3 tools/rnw.py MODEL.rnw --no-verify     # skip the per-tensor checksums

The reader itself is the `rnw` package in python/ (`pip install ./python`, then `python -m rnw`
does the same as this script); this shim puts python/src first on the import path so that it
works without installing. Exit status 3 for a file that cannot be read.
"""
import os
import sys

# Replace this script's own folder on the path: here `import rnw` must find the package, not this file.
sys.path[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "python", "src")

from rnw.__main__ import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
