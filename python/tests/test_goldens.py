"""`python -m rnw.goldens`: the archive it writes, and that it imports no framework it does not need."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from rnw.goldens import write_npz


def test_archive_holds_what_resnet_convert_reads(tmp_path):
    x = np.zeros((2, 3, 8, 8), dtype=np.float64)
    y = np.ones((2, 10), dtype=np.float64)
    path = tmp_path / "io.npz"
    write_npz(str(path), x, y, "NCHW")
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["input", "layout", "output"]
        assert z["input"].dtype == np.float32 and z["input"].shape == (2, 3, 8, 8)
        assert z["output"].dtype == np.float32
        assert z["layout"].shape == () and str(z["layout"]) == "NCHW"


def test_an_unknown_source_is_refused_without_importing_a_framework():
    code = ("import sys\nfrom rnw import goldens\n"
            "try:\n    goldens.main(['not-a-source', '-o', '/dev/null'])\n"
            "except SystemExit as e:\n    print(e)\n"
            "print('torch' in sys.modules, 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "cannot tell what 'not-a-source' is" in out
    assert out.strip().endswith("False False")
