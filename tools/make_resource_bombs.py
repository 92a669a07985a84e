#!/usr/bin/env python3
"""Writes fixtures/hostile-resources/: small crafted files that ask a reader for far more memory
than their size (stride-0 and overlapping tensor views, zip members that declare or inflate to
gigabytes, configs that decode large) or that two readers could read differently (duplicate zip
members, a local header that disagrees with the directory, duplicate JSON keys).

Standard library only (struct, zlib, pickle with stand-in modules for the torch globals: nothing
is imported from torch and nothing in these files is ever meant to be unpickled), except the one
HDF5 file, written with h5py when it is importable (otherwise the committed copy is kept). Every file is a
few KB at most; MANIFEST.json lists each with its size, sha256, what it tries, the command a test
runs (``{file}`` is the crafted file, ``{fixtures}`` the fixtures folder, ``{out}`` an output path
that must not appear) and a phrase the refusal must contain.

Usage: python3 tools/make_resource_bombs.py [fixtures/hostile-resources]
"""

import collections
import hashlib
import io
import json
import pickle
import struct
import sys
import types
import zlib
from pathlib import Path

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "fixtures" / "hostile-resources")


# --- a zip writer with full control over both headers -------------------------------------------

def deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


class Member:
    """One zip member. `stored` is what goes into the file; the other fields default to the
    truth and can be set to lie (in the directory, the local header, or both)."""

    def __init__(self, name, plain, method=0, stored=None):
        self.name = name
        self.method = method
        self.stored = stored if stored is not None else (deflate(plain) if method == 8 else plain)
        self.crc = zlib.crc32(plain) & 0xFFFFFFFF
        self.usize = len(plain)
        self.csize = len(self.stored)
        self.local_name = name
        self.local_method = method
        self.local_usize = None   # None: same as the directory
        self.local_csize = None


def zip_bytes(members):
    out = io.BytesIO()
    central = []
    for m in members:
        offset = out.tell()
        lu = m.usize if m.local_usize is None else m.local_usize
        lc = m.csize if m.local_csize is None else m.local_csize
        zip64 = lu >= 0xFFFFFFFF or lc >= 0xFFFFFFFF
        lname = m.local_name.encode()
        extra = struct.pack("<HHQQ", 1, 16, lu, lc) if zip64 else b""
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, 0x800, m.local_method, 0, 0x21, m.crc,
                              0xFFFFFFFF if zip64 else lc, 0xFFFFFFFF if zip64 else lu, len(lname), len(extra)))
        out.write(lname + extra + m.stored)
        cz = m.usize >= 0xFFFFFFFF or m.csize >= 0xFFFFFFFF
        cextra = struct.pack("<HHQQ", 1, 16, m.usize, m.csize) if cz else b""
        name = m.name.encode()
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45 if cz else 20, 45 if cz else 20, 0x800, m.method, 0, 0x21,
                                   m.crc, 0xFFFFFFFF if cz else m.csize, 0xFFFFFFFF if cz else m.usize, len(name), len(cextra),
                                   0, 0, 0, 0, offset) + name + cextra)
    start = out.tell()
    for c in central:
        out.write(c)
    size = out.tell() - start
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), size, start, 0))
    return out.getvalue()


# --- torch pickles, written with stand-ins for the torch globals ---------------------------------

def stand_in(module, name, kind="function"):
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    obj = type(name, (), {}) if kind == "class" else (lambda *a: None)
    obj.__module__ = module
    obj.__qualname__ = obj.__name__ = name
    setattr(sys.modules[module], name, obj)
    return obj


rebuild_tensor_v2 = stand_in("torch._utils", "_rebuild_tensor_v2")
FloatStorage = stand_in("torch", "FloatStorage", "class")
ByteStorage = stand_in("torch", "ByteStorage", "class")


class StorageRef:
    def __init__(self, key, cls, count):
        self.pid = ("storage", cls, key, "cpu", count)


class View:
    """Pickles as `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`."""

    def __init__(self, storage, size, stride, offset=0):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (rebuild_tensor_v2, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, StorageRef) else None


def torch_zip(state, storages, root="archive", deflated=False):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(collections.OrderedDict(state))
    members = [Member(f"{root}/data.pkl", buf.getvalue()), Member(f"{root}/byteorder", b"little"),
               Member(f"{root}/version", b"3\n")]
    for key, data in storages.items():
        members.append(Member(f"{root}/data/{key}", data, method=8 if deflated else 0))
    return members


# --- .keras, .npz, safetensors -------------------------------------------------------------------

CONFIG = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": []}}).encode()
METADATA = json.dumps({"keras_version": "3.3.3"}).encode()


def keras(config=CONFIG, weights=b"\x89HDF\r\n\x1a\n" + bytes(56)):
    return [Member("metadata.json", METADATA), Member("config.json", config), Member("model.weights.h5", weights)]


def npy(shape, data=None):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % (str(tuple(shape)) if len(shape) != 1 else f"({shape[0]},)")
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    n = 1
    for d in shape:
        n *= d
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + (data if data is not None else bytes(4 * n))


def lie_size(m, usize):
    """The member declares `usize` plain bytes (directory and local header) whatever it holds."""
    m.usize = usize
    return m


def safetensors(header_text, data):
    h = header_text.encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


# --- the files -----------------------------------------------------------------------------------

SMALL_TORCH = "{fixtures}/torch/cifar-resnet20-optionA/cifar-resnet20-optionA.pth"
FILES = []


def add(name, data, tries, mention, command=None):
    FILES.append((name, data, tries, mention, command or ["convert", "{file}", "{out}"]))


one = StorageRef("0", FloatStorage, 1)
add("torch-expand-views.pth",
    zip_bytes(torch_zip({f"w{i}": View(one, [1 << 29], [0]) for i in range(4)}, {"0": bytes(4)})),
    "four stride-0 views (x.expand) of one stored float32, 2 GiB each as float32, 8 GiB together (inside the "
    "per-tensor and total limits): materialised in full before the budget", "--max-expansion")

overlap = StorageRef("0", ByteStorage, (1 << 11) + (1 << 8) - 2)
add("torch-overlapping-view.pth",
    zip_bytes(torch_zip({"w": View(overlap, [1 << 10, 1 << 10, 1 << 8], [1, 1, 1])}, {"0": bytes((1 << 11) + (1 << 8) - 2)})),
    "one overlapping view (shape 1024×1024×256, strides 1, 1, 1) of a 2 KB uint8 storage: 2^28 elements, 1 GiB as float32",
    "--max-expansion")

m = keras()
w = lie_size(Member("model.weights.h5", bytes(4096), method=8), 0x3F9000000)  # 15.9 GiB
m[2] = w
add("keras-weights-declares-16g.keras", zip_bytes(m),
    "model.weights.h5 declares 15.9 GiB (zip64) over a 20-byte deflate stream: the size a reader reserved up front",
    "--max-expansion")

m = keras()
w = lie_size(Member("model.weights.h5", bytes(8 << 20), method=8), 4096)
m[2] = w
add("keras-weights-inflates-past-declared.keras", zip_bytes(m),
    "model.weights.h5 declares 4 KB but its deflate stream inflates to 8 MiB", "inflates past")

m = keras()
m[1] = lie_size(Member("config.json", CONFIG, method=8), 255 << 20)
add("keras-config-declares-255m.keras", zip_bytes(m),
    "config.json declares 255 MiB (under the 256 MiB header limit) in a file of a few hundred bytes", "--max-expansion")

tiny_objects = ("[" + ",".join('{"a1":1}' for _ in range(6000)) + "]").encode()
m = keras(config=tiny_objects)
m[1] = Member("config.json", tiny_objects, method=8)
add("keras-config-decodes-large.keras", zip_bytes(m),
    "config.json of 54 KB (deflated to a few hundred bytes), an array of tiny objects that decodes to ~17× its size; "
    "refused under --max-header-bytes 100K although its text fits", "--max-header-bytes",
    ["convert", "{file}", "{out}", "--max-header-bytes", "100K"])

npz = [Member("input.npy", npy([1, 3, 32, 32]), method=8), Member("output.npy", npy([1, 10]), method=8)]
npz[0] = lie_size(Member("input.npy", npy([1 << 28]), method=8, stored=deflate(npy([1, 3, 32, 32]))), (1 << 30) + 128)
add("npz-declares-1g.npz", zip_bytes(npz),
    "goldens whose input.npy declares 1 GiB over a short deflate stream", "--max-expansion",
    ["convert", SMALL_TORCH, "{out}", "--expect", "{file}"])

npz = [lie_size(Member("input.npy", npy([(8 << 20) // 4]), method=8), 4096), Member("output.npy", npy([1, 10]), method=8)]
add("npz-inflates-past-declared.npz", zip_bytes(npz),
    "goldens whose input.npy declares 4 KB and inflates to 8 MiB", "inflates past",
    ["convert", SMALL_TORCH, "{out}", "--expect", "{file}"])

# Ambiguity: what two readers could read differently is refused.
add("keras-two-config-json.keras", zip_bytes(keras() + [Member("config.json", CONFIG.replace(b'"s"', b'"t"'))]),
    "two members named config.json: Keras (Python's zipfile) reads the last, ZIP libraries the first", "two members named")

m = keras()
m[1].local_name = "config.jsoN"
add("keras-local-name-differs.keras", zip_bytes(m),
    "config.json in the directory, config.jsoN in its local header", "local header")

m = keras()
m[1].local_method = 8
add("keras-local-method-differs.keras", zip_bytes(m),
    "config.json stored in the directory, deflated in its local header", "compression method")

m = keras()
m[1].local_usize = m[1].usize + 1
m[1].local_csize = m[1].csize + 1
add("keras-local-size-differs.keras", zip_bytes(m),
    "config.json's sizes in its local header one more than in the directory", "local header")

members = torch_zip({"w": View(one, [1], [1])}, {"0": bytes(4)})
members.append(Member("archive/data.pkl", members[0].stored))
add("torch-two-data-pkl.pth", zip_bytes(members), "two members named archive/data.pkl", "two members named")

members = torch_zip({"w": View(one, [1], [1])}, {"0": bytes(4)})
members[-1].local_name = "archive/data/1"
add("torch-local-name-differs.pth", zip_bytes(members),
    "archive/data/0 in the directory, archive/data/1 in its local header", "local header")

npz = [Member("input.npy", npy([1, 3, 32, 32]), method=8), Member("output.npy", npy([1, 10]), method=8),
       Member("input.npy", npy([1, 3, 32, 32]), method=8)]
add("npz-two-inputs.npz", zip_bytes(npz), "goldens with two members named input.npy", "two members named",
    ["convert", SMALL_TORCH, "{out}", "--expect", "{file}"])

dup_config = b'{"class_name": "Sequential", "config": {"name": "s", "layers": [{"class_name": "Dense", "config": {"units": 1, "units": 2}}]}}'
add("keras-config-duplicate-key.keras", zip_bytes(keras(config=dup_config)),
    "config.json with the key 'units' twice in a nested object (Python's json keeps the last)", "appears twice")

add("safetensors-duplicate-tensor.safetensors",
    safetensors('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
    "a safetensors header naming tensor 'w' twice", "appears twice")

add("safetensors-duplicate-metadata.safetensors",
    safetensors('{"__metadata__":{"format":"pt","format":"np"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
    "a safetensors header whose __metadata__ names 'format' twice", "appears twice")


def hdf5_fill_bomb():
    """A Keras 2 weights file whose twelve gzip datasets of 10 MB each have no chunk written: they
    read back as the fill value, so 12 KB of file asks for 120 MB of float32 (each dataset within
    libhdf5's compression ratio bound, the sum over the file's budget)."""
    path = OUT / "h5-unwritten-chunks.h5"
    try:
        import h5py
        import numpy as np
    except ImportError:
        print("h5py not importable: keeping the committed h5-unwritten-chunks.h5")
        return path.read_bytes()
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.15.0"
        g = f.create_group("dense")
        names = [f"dense/kernel_{i}:0".encode() for i in range(12)]
        g.attrs["weight_names"] = np.array(names)
        for n in names:
            g.create_dataset(n.decode(), shape=(2_500_000,), dtype="f4", chunks=(1 << 18,), compression="gzip", track_times=False)
    return path.read_bytes()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    add("h5-unwritten-chunks.h5", hdf5_fill_bomb(),
        "a Keras weights file of 12 KB whose twelve gzip datasets (10 MB each as float32) have no chunk written",
        "--max-expansion", ["convert", "{file}", "{out}", "--arch", "keras-resnet50"])
    manifest = []
    for name, data, tries, mention, command in FILES:
        (OUT / name).write_bytes(data)
        manifest.append({"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "tries": tries,
                         "command": command, "expected_exit": 3, "mention": mention})
    (OUT / "MANIFEST.json").write_text(json.dumps({"files": manifest}, indent=1) + "\n")
    for e in manifest:
        print(f"{e['size']:8d}  {e['file']}")


if __name__ == "__main__":
    main()
