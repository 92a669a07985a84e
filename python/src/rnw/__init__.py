"""Read .rnw weight files (resnet-convert's native format) with numpy.

    import rnw
    weights = rnw.load("model.rnw")        # {name: numpy array}, every checksum verified
    with rnw.open("model.rnw") as f:        # lazy: validated header, manifest and layout
        f.spec["family"], f.metadata, f.provenance
        w = f["conv1.weight"]               # float32/float16: zero-copy np.memmap view
        f.verify()                          # every tensor's xxHash64

Malformed files raise `rnw.RNWError` naming the file, the place in it and the reason.
"""

from __future__ import annotations

from ._file import (DTYPES, RNWError, RNWFile, TensorInfo, bf16_to_f32, checksum_backend,  # noqa: F401
                    xxh64)

__version__ = "1.1.0"
__all__ = ["RNWError", "RNWFile", "TensorInfo", "bf16_to_f32", "checksum_backend", "load", "open",
           "to_torch_state_dict", "xxh64"]


def open(path, verify: bool = False) -> RNWFile:  # noqa: A001 - the natural name, as in io.open
    """Opens `path` lazily: header, manifest, spec and the placement of every tensor are checked
    now; tensor checksums only with `verify=True` or a later `.verify()`."""
    return RNWFile(path, verify=verify)


def load(path, verify: bool = True) -> dict:
    """Every tensor of `path` as a numpy array in memory, in the spec's parameter order.

    float32 and float16 tensors keep their dtype; bfloat16 tensors are widened to float32 (exact);
    int8 tensors are dequantised to float32 as q * scale of their output channel, computed in
    float32 exactly as the Swift reader does. With `verify` (the default) every tensor checksum is
    checked first.
    """
    with RNWFile(path, verify=verify) as f:
        return f.load()


def to_torch_state_dict(path_or_file, names: str = "auto", tensors: str = "auto"):
    """The weights under PyTorch state-dict names; see `rnw.torch_names.to_torch_state_dict`."""
    from .torch_names import to_torch_state_dict as convert
    if isinstance(path_or_file, RNWFile):
        return convert(path_or_file, names=names, tensors=tensors)
    with RNWFile(path_or_file, verify=True) as f:
        return convert(f, names=names, tensors=tensors)
