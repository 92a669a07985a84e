"""The committed golden .rnw files: read by this package exactly as the Swift reader reads them."""

from __future__ import annotations

import numpy as np
import pytest

import rnw
from conftest import GOLDEN_RNW, TORCH_FIXTURES, read_safetensors, run_cli, widen

assert GOLDEN_RNW, "fixtures/rnw holds no .rnw files"
IDS = [p.name for p in GOLDEN_RNW]


def _stored_dtype(path) -> str:
    for d in ("bf16", "f16", "int8", "f32"):
        if f".{d}." in path.name:
            return {"int8": "i8"}.get(d, d)
    raise AssertionError(path.name)


@pytest.mark.parametrize("path", GOLDEN_RNW, ids=IDS)
def test_opens_and_verifies_with_both_checksum_backends(path):
    with rnw.open(path) as f:
        assert f.version in ((1, 0), (1, 1))
        assert f.version == ((1, 0) if ".v1.0." in path.name else (1, 1))
        assert f.spec["family"] and f.spec["stages"]
        assert f.provenance is not None and f.provenance["tool_version"]
        f.verify(backend="python")
        if rnw.checksum_backend() == "xxhash":
            f.verify(backend="xxhash")
        narrow = {e.dtype for e in f.infos()} - {"f32"}
        assert narrow == ({_stored_dtype(path)} - {"f32"})
        for e in f.infos():
            assert e.offset % 64 == 0


@pytest.mark.parametrize("path", GOLDEN_RNW, ids=IDS)
def test_lazy_views_and_load_agree(path):
    loaded = rnw.load(path)
    with rnw.open(path) as f:
        assert list(loaded) == f.names()
        for e in f.infos():
            v = f[e.name]
            if e.dtype in ("f32", "f16"):
                assert isinstance(v, np.memmap) and not v.flags.writeable
                assert v.dtype == np.dtype("<f4" if e.dtype == "f32" else "<f2")
                assert np.shares_memory(v, f.raw(e.name))
            else:
                assert v.dtype == np.float32
            assert v.shape == e.shape
            assert loaded[e.name].dtype == v.dtype
            assert loaded[e.name].tobytes() == np.asarray(v).tobytes()


@pytest.mark.parametrize("path", GOLDEN_RNW, ids=IDS)
def test_every_tensor_equals_the_swift_reader_bit_for_bit(path, tmp_path):
    # `export` reads the .rnw with the Swift reader and writes each tensor in the spec's parameter
    # order, adding a num_batches_tracked after each BN. It keeps f16 and bf16 as stored (int8 and f32
    # come out as float32), so the Swift reader's float32 is the export widened exactly.
    out = tmp_path / "swift.safetensors"
    run_cli("export", str(path), str(out))
    swift = [(n, a) for n, a in read_safetensors(out) if not n.endswith("num_batches_tracked")]
    loaded = rnw.load(path)
    with rnw.open(path) as f:
        assert len(swift) == len(f)
        for (swift_name, exported), e in zip(swift, f.infos()):
            assert swift_name.rsplit(".", 1)[1] == e.name.rsplit(".", 1)[1]
            kept = {"f16": np.float16, "bf16": np.uint16}.get(e.dtype, np.float32)
            assert exported.dtype == kept and exported.shape == e.shape, e.name
            ref = widen(exported)
            mine = f.float32(e.name)
            assert mine.dtype == np.float32
            assert mine.view(np.uint32).tobytes() == ref.view(np.uint32).tobytes(), e.name
            stored = loaded[e.name]
            if e.dtype == "f16":
                assert stored.dtype == np.float16
                assert stored.astype(np.float32).tobytes() == ref.tobytes(), e.name
            else:
                assert stored.dtype == np.float32 and stored.tobytes() == ref.tobytes(), e.name


TORCH_CASES = ["tv-resnet18-mini", "tv-resnet50-mini", "cifar-resnet20-optionA", "cifar-resnet20-optionB"]


@pytest.mark.parametrize("name", TORCH_CASES)
def test_torch_state_dict_matches_the_swift_export(name, tmp_path):
    src = TORCH_FIXTURES / name / f"{name}.pth"
    model = tmp_path / f"{name}.rnw"
    run_cli(str(src), str(model), "--expect", str(TORCH_FIXTURES / name / "io.npz"))
    out = tmp_path / "swift.safetensors"
    run_cli("export", str(model), str(out))
    swift = read_safetensors(out)
    with rnw.open(model, verify=True) as f:
        sd = f.to_torch_state_dict(tensors="numpy")
        canonical = f.to_torch_state_dict(names="canonical", tensors="numpy")
    assert len(sd) == len(swift)
    swift_names = [n for n, _ in swift]
    if name == "cifar-resnet20-optionA":
        # The Swift exporter keeps the canonical `fc` for option A (its torchvision-named file maps
        # back to the same structure); the CIFAR class such a model comes from calls it `linear`.
        assert swift_names == list(canonical)
        assert list(sd)[-2:] == ["linear.weight", "linear.bias"]
    else:
        assert swift_names == list(sd)
    for (n, ref), mine in zip(swift, sd.values()):
        assert mine.dtype == ref.dtype and mine.shape == ref.shape and mine.tobytes() == ref.tobytes(), n


def test_keras_layouts_have_no_torch_names():
    with rnw.open(GOLDEN_RNW[0]) as f:
        with pytest.raises(ValueError, match="no PyTorch layout"):
            f.to_torch_state_dict(tensors="numpy")
        sd = f.to_torch_state_dict(names="canonical", tensors="numpy")
        assert [k for k in sd if not k.endswith("num_batches_tracked")] == f.names()


def test_torch_state_dict_equals_the_source_checkpoint(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed; the comparison with torch.load is skipped")
    name = "tv-resnet18-mini"
    src = TORCH_FIXTURES / name / f"{name}.pth"
    model = tmp_path / f"{name}.rnw"
    run_cli(str(src), str(model), "--expect", str(TORCH_FIXTURES / name / "io.npz"))
    sd = rnw.to_torch_state_dict(model)
    state = torch.load(src, map_location="cpu", weights_only=True)
    assert list(sd) == list(state)
    for k, v in state.items():
        assert isinstance(sd[k], torch.Tensor)
        if k.endswith("num_batches_tracked"):
            continue  # BN's training counter: resnet-convert does not keep it (written as 0)
        assert sd[k].dtype == v.dtype == torch.float32
        assert sd[k].numpy().tobytes() == v.numpy().tobytes(), k
