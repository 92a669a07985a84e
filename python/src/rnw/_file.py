"""Opening and validating a .rnw file (format 1.x) through a read-only memory map.

Every rule of the format description (Sources/ResNetKit/ResNetKit.docc/RNWFormat.md) that a reader
MUST check is checked when the file is opened, in the order the Swift reader checks them, so both
readers name the same place for the same damage: magic, size, header checksum, version, flags,
manifest length and checksum, manifest wire format, spec, every tensor entry (dtype, shape, length,
alignment, bounds, int8 scales), the entries against the spec, overlap, zero padding and the end of
the file. Tensor checksums are checked by `verify()` (by `open(..., verify=True)` and by `load`).
Nothing read from the file is ever executed; every offset and length is checked before use.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from dataclasses import dataclass

import numpy as np

from . import _xxh64
from ._proto import WireError, decode_manifest
from ._spec import SpecError, spec_parameters

try:  # the C implementation, about a thousand times faster than the numpy one
    import xxhash as _xxhash
except ImportError:  # pragma: no cover - depends on the environment
    _xxhash = None

MAGIC = bytes([0x52, 0x4E, 0x57, 0x00, 0x0D, 0x0A, 0x1A, 0x0A])
HEADER_SIZE = 40
ALIGNMENT = 64
SUPPORTED_MAJOR = 1
SUPPORTED_MINOR = 1

#: Manifest dtype values and the names this package uses for them.
DTYPES = {1: "f32", 2: "f16", 3: "bf16", 4: "i8"}
#: Bytes per element of each dtype.
DTYPE_SIZE = {"f32": 4, "f16": 2, "bf16": 2, "i8": 1}
# The most bytes of manifest read (the Swift reader's default header limit, 256 MiB).
MAX_MANIFEST_BYTES = 256 << 20
#: numpy dtype of the stored values (bfloat16 as its 16-bit pattern).
STORED_NUMPY = {"f32": "<f4", "f16": "<f2", "bf16": "<u2", "i8": "i1"}


class RNWError(Exception):
    """A .rnw file that cannot be read: damaged, truncated, malformed or of an unsupported version.

    `file`, `place` (header, manifest, a tensor, padding, ...) and `reason` are also attributes.
    """

    def __init__(self, file: str, place: str, reason: str):
        super().__init__(f"{file}: {place}: {reason}")
        self.file = file
        self.place = place
        self.reason = reason


@dataclass(frozen=True)
class TensorInfo:
    """One manifest entry: where a tensor's bytes are and how to read them."""

    name: str
    dtype: str  # "f32", "f16", "bf16" or "i8"
    shape: tuple
    offset: int
    length: int
    checksum: int
    scales: tuple  # i8 only: one float32 scale per output channel (shape[0])


def checksum_backend() -> str:
    """'xxhash' when the xxhash package is importable, else 'python' (numpy, much slower)."""
    return "xxhash" if _xxhash is not None else "python"


def xxh64(data, backend: str | None = None) -> int:
    """XXH64 with seed 0 of a bytes-like object, as .rnw checksums use."""
    return _hash_many([data], backend)[0]


def _hash_many(buffers: list, backend: str | None) -> list[int]:
    backend = backend or checksum_backend()
    if backend == "xxhash":
        if _xxhash is None:
            raise RuntimeError("the xxhash package is not installed")
        return [_xxhash.xxh64_intdigest(b) for b in buffers]
    if backend != "python":
        raise ValueError(f"unknown checksum backend {backend!r}: use 'xxhash' or 'python'")
    return _xxh64.xxh64_many(buffers)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) to float32: the pattern shifted left by 16 bits."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _hex(b: bytes) -> str:
    return " ".join(f"{x:02X}" for x in b)


class RNWFile:
    """A validated .rnw file, mapped read-only. Tensors are read only when asked for.

    - `spec`: the model structure (the manifest's spec record, decoded JSON);
    - `metadata`, `provenance` (or None), `parity`: the manifest's other records;
    - `names()`, `info(name)`, `f[name]`, `raw(name)`, `float32(name)`, `verify()`, `load()`.

    `f[name]` gives the values: float32 and float16 tensors as zero-copy, read-only `np.memmap`
    views of the file; bfloat16 widened to float32 and int8 dequantised to float32 (copies, computed
    exactly as the Swift reader does). `raw(name)` is the stored array without conversion.
    Use it as a context manager or call `close()`; arrays already handed out stay valid.
    """

    def __init__(self, path, verify: bool = False):
        self.path = os.fspath(path)
        self._data = self._map()
        self._validate()
        if verify:
            self.verify()

    # -- mapping ------------------------------------------------------------------------------

    def _fail(self, place: str, reason: str) -> RNWError:
        return RNWError(self.path, place, reason)

    def _map(self) -> np.ndarray:
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)
        except OSError as e:
            raise self._fail("file", f"cannot open: {e.strerror}") from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise self._fail("file", "not a regular file")
            size = st.st_size
            if size == 0:
                return np.zeros(0, dtype=np.uint8)
            with os.fdopen(os.dup(fd), "rb") as f:
                return np.memmap(f, dtype=np.uint8, mode="r", shape=(size,))
        except OSError as e:
            raise self._fail("file", f"cannot map: {e.strerror or e}") from e
        finally:
            os.close(fd)

    def close(self) -> None:
        """Drops this object's reference to the mapping (views handed out keep it alive)."""
        self._data = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _bytes(self) -> np.ndarray:
        if self._data is None:
            raise ValueError(f"{self.path}: the file was closed")
        return self._data

    # -- validation ---------------------------------------------------------------------------

    def _validate(self) -> None:
        data = self._data
        size = len(data)
        fail = self._fail

        seen = bytes(data[:len(MAGIC)])
        if seen != MAGIC[:len(seen)]:
            raise fail("header bytes 0..<8", f"magic is {_hex(seen)}, expected {_hex(MAGIC)}: not an .rnw file or damaged")
        if size < HEADER_SIZE:
            raise fail("header", f"file is {size} bytes, shorter than the {HEADER_SIZE}-byte header: truncated")
        header = bytes(data[:HEADER_SIZE])
        major, minor, flags, mlen, msum, hsum = struct.unpack_from("<HHIQQQ", header, 8)
        computed = xxh64(header[:32])
        if computed != hsum:
            raise fail("header", f"checksum mismatch (stored {hsum:#x}, computed {computed:#x}): header is corrupt")
        if major > SUPPORTED_MAJOR:
            raise fail("header", f"format version {major}.{minor} is newer than this reader's "
                                 f"{SUPPORTED_MAJOR}.{SUPPORTED_MINOR}; a newer rnw package is needed")
        if major != SUPPORTED_MAJOR:
            raise fail("header", f"format major version {major} was never released")
        if flags != 0:
            raise fail("header", f"flags {flags:#x} are not defined in format {SUPPORTED_MAJOR}.{SUPPORTED_MINOR}")
        if mlen > size - HEADER_SIZE:
            raise fail("manifest", f"length {mlen} runs past the end of the {size}-byte file: truncated")
        if mlen > MAX_MANIFEST_BYTES:
            # The Swift reader's header limit: decoded, a manifest takes many times its bytes.
            raise fail("manifest", f"{mlen} bytes exceeds the {MAX_MANIFEST_BYTES}-byte limit on a manifest")
        mend = HEADER_SIZE + mlen
        mbytes = bytes(data[HEADER_SIZE:mend])
        computed = xxh64(mbytes)
        if computed != msum:
            raise fail(f"manifest bytes {HEADER_SIZE}..<{mend}",
                       f"checksum mismatch (header says {msum:#x}, computed {computed:#x}): manifest is corrupt")
        try:
            m = decode_manifest(mbytes)
        except WireError as e:
            raise fail(e.place, f"not a valid protobuf rnw.Manifest: {e.reason}") from None

        entries = []
        for i, e in enumerate(m["tensors"]):
            place = f"manifest tensor {e['name']}" if e["name"] else f"manifest tensor #{i}"
            dtype = DTYPES.get(e["dtype"])
            if dtype is None:
                raise fail(place, f"unknown dtype value {e['dtype']}")
            for d, n in enumerate(e["shape"]):
                if n < 0:
                    raise fail(place, f"dimension {d} is {n}")
            entries.append(TensorInfo(e["name"], dtype, tuple(e["shape"]), e["offset"], e["length"],
                                      e["checksum"], tuple(e["scales"])))
        if (m["format_major"], m["format_minor"]) != (major, minor):
            raise fail("manifest", f"says format {m['format_major']}.{m['format_minor']} but the header says {major}.{minor}")
        try:
            spec = json.loads(m["spec_json"].decode("utf-8"))
        except RecursionError:
            raise fail("manifest spec_json", "nested too deeply") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise fail("manifest spec_json", f"not valid UTF-8 JSON: {str(e)[:200]}") from None
        try:
            expected = spec_parameters(spec)
        except SpecError as e:
            raise fail("manifest spec_json", str(e)) from None
        except RecursionError:
            raise fail("manifest spec_json", "nested too deeply") from None

        seen_names = set()
        for e in entries:
            place = f"tensor {e.name}"
            if not e.name:
                raise fail("manifest", "a tensor entry has an empty name")
            if e.name in seen_names:
                raise fail(place, "name appears more than once in the manifest")
            seen_names.add(e.name)
            # The product stops growing past what the stated length holds, so a long shape of large
            # dimensions costs linear time, not big-integer products.
            limit = e.length // DTYPE_SIZE[e.dtype]
            count = 0 if 0 in e.shape else 1
            for d in e.shape:
                count *= d
                if count > limit:
                    break
            if count * DTYPE_SIZE[e.dtype] != e.length:
                shown = str(list(e.shape[:8]))[:-1] + (", …]" if len(e.shape) > 8 else "]")
                raise fail(place, f"length {e.length} does not equal {shown} x {DTYPE_SIZE[e.dtype]} bytes ({e.dtype})")
            if e.offset % ALIGNMENT:
                raise fail(place, f"offset {e.offset} is not a multiple of {ALIGNMENT}")
            if e.offset < mend:
                raise fail(place, f"offset {e.offset} lies inside the header or manifest (which end at {mend})")
            if e.offset > size or e.length > size - e.offset:
                raise fail(place, f"bytes {e.offset}..<{e.offset + e.length} run past the end of the {size}-byte file: truncated")
            if e.dtype == "i8":
                if not e.shape or len(e.scales) != e.shape[0]:
                    raise fail(place, f"int8 tensor needs one scale per output channel, has {len(e.scales)}")
                for o, s in enumerate(e.scales):
                    if not np.isfinite(s) or s < 0:
                        raise fail(place, f"int8 scale of output channel {o} is {s}; scales must be finite and >= 0")
            elif e.scales:
                raise fail(place, "scales are only allowed on int8 tensors")

        present = {e.name: e for e in entries}
        for name, shape in expected:
            e = present.get(name)
            if e is None:
                raise fail(f"tensor {name}", "the spec needs it but the manifest has no entry")
            if e.shape != shape:
                raise fail(f"tensor {name}", f"shape {list(e.shape)} but the spec needs {list(shape)}")
        if len(entries) != len(expected):
            wanted = {n for n, _ in expected}
            extra = next((e.name for e in entries if e.name not in wanted), "?")
            raise fail(f"tensor {extra}", "not a parameter of the spec")

        cursor, previous = mend, "manifest"
        for e in sorted(entries, key=lambda t: t.offset):
            if e.offset < cursor:
                raise fail(f"tensor {e.name}", f"bytes {e.offset}..<{e.offset + e.length} overlap {previous}, which ends at {cursor}")
            gap = data[cursor:e.offset]
            if gap.size and gap.any():
                i = cursor + int(np.flatnonzero(gap)[0])
                raise fail(f"padding before tensor {e.name}", f"padding byte at offset {i} is {int(data[i])}, must be 0: file is corrupt")
            cursor, previous = e.offset + e.length, f"tensor {e.name}"
        if cursor != size:
            raise fail("end of file", f"{size - cursor} bytes follow the end of {previous} at {cursor}")

        self.version = (major, minor)
        self.spec = spec
        self.spec_json = m["spec_json"]
        self.metadata = m["metadata"]
        self.provenance = m["provenance"]
        self.parity = m["parity"]
        self._entries = entries
        self._index = {e.name: e for e in entries}

    # -- access -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Tensor names in manifest order (the spec's parameter order)."""
        return [e.name for e in self._entries]

    def infos(self) -> list[TensorInfo]:
        """Every manifest entry, in manifest order."""
        return list(self._entries)

    def info(self, name: str) -> TensorInfo:
        e = self._index.get(name)
        if e is None:
            raise KeyError(f"{self.path}: no tensor named {name!r}")
        return e

    def __contains__(self, name) -> bool:
        return name in self._index

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def raw(self, name: str) -> np.ndarray:
        """The stored values as a read-only `np.memmap` view: float32, float16, bfloat16 bit
        patterns (uint16) or int8 (use `info(name).scales`). Little-endian in the file."""
        e = self.info(name)
        view = self._bytes()[e.offset:e.offset + e.length]
        return view.view(STORED_NUMPY[e.dtype]).reshape(e.shape)

    def __getitem__(self, name: str) -> np.ndarray:
        """float32/float16: a zero-copy memmap view; bfloat16 and int8: float32 (see `float32`)."""
        e = self.info(name)
        if e.dtype in ("f32", "f16"):
            return self.raw(name)
        return self.float32(name)

    def float32(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array, widened exactly as the Swift reader does: float16
        and bfloat16 exactly; int8 element q of output channel o as q * scales[o] in float32."""
        e = self.info(name)
        raw = self.raw(name)
        if e.dtype == "f32":
            return np.array(raw, dtype=np.float32)
        if e.dtype == "f16":
            return raw.astype(np.float32)
        if e.dtype == "bf16":
            return bf16_to_f32(raw)
        scales = np.asarray(e.scales, dtype=np.float32).reshape((-1,) + (1,) * (raw.ndim - 1))
        return raw.astype(np.float32) * scales

    def verify(self, backend: str | None = None) -> None:
        """Checks every tensor's xxHash64; raises RNWError naming the first bad tensor in manifest
        order. `backend`: 'xxhash' or 'python'; default: xxhash when installed."""
        data = self._bytes()
        buffers = [memoryview(data[e.offset:e.offset + e.length]) for e in self._entries]
        sums = _hash_many(buffers, backend)
        for e, s in zip(self._entries, sums):
            if s != e.checksum:
                raise self._fail(f"tensor {e.name} bytes {e.offset}..<{e.offset + e.length}",
                                 f"checksum mismatch (manifest says {e.checksum:#x}, computed {s:#x}): tensor data is corrupt")

    def load(self) -> dict:
        """Every tensor as an in-memory array (see `rnw.load`), in manifest order."""
        out = {}
        for e in self._entries:
            out[e.name] = np.array(self.raw(e.name)) if e.dtype in ("f32", "f16") else self.float32(e.name)
        return out

    def to_torch_state_dict(self, names: str = "auto", tensors: str = "auto"):
        """See `rnw.torch_names.to_torch_state_dict`."""
        from .torch_names import to_torch_state_dict
        return to_torch_state_dict(self, names=names, tensors=tensors)

    def __repr__(self) -> str:
        return (f"<rnw.RNWFile {self.path!r} format {self.version[0]}.{self.version[1]}, "
                f"{self.spec.get('family')}, {len(self._entries)} tensors>")
