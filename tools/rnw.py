#!/usr/bin/env python3
"""A small reader of .rnw weight files (resnet-convert's native format) needing only numpy.

    python3 tools/rnw.py MODEL.rnw                 # summary: version, spec family, tensor table
    python3 tools/rnw.py MODEL.rnw --npz OUT.npz   # every tensor as float32 (int8/f16/bf16 widened)
    python3 tools/rnw.py MODEL.rnw --no-verify     # skip the per-tensor checksums (pure Python xxHash64 is slow)

As a library:

    import rnw
    f = rnw.read("model.rnw")          # verifies header, manifest and tensor checksums
    f.spec["family"], f.manifest["tensors"][0]["name"]
    w = f.tensor("conv1.weight")        # numpy float32 array, canonical layout (conv OIHW, dense (out, in))

The format is specified in Sources/ResNetKit/ResNetKit.docc/RNWFormat.md; the manifest is the protobuf
message in tools/rnw.proto. No protobuf runtime is used: the wire format (varints, fixed 32/64-bit
values, length-delimited fields) is decoded here by hand, following the field numbers of rnw.proto.
Unknown fields are skipped, as protobuf requires, so files of later minor versions still read.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys

import numpy as np

MAGIC = bytes([0x52, 0x4E, 0x57, 0x00, 0x0D, 0x0A, 0x1A, 0x0A])
HEADER_SIZE = 40
SUPPORTED_MAJOR = 1
DTYPES = {1: "F32", 2: "F16", 3: "BF16", 4: "I8"}
DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}


class RNWError(Exception):
    """A damaged, truncated or unsupported file; the message names the place."""


# ---------------------------------------------------------------------------------------------
# xxHash64 (XXH64 as in xxhash's doc/xxhash_spec.md), seed 0.
# ---------------------------------------------------------------------------------------------

_M = (1 << 64) - 1
_P1, _P2, _P3, _P4, _P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                           0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M, 31) * _P1) & _M


def _merge(acc: int, v: int) -> int:
    return (((acc ^ _round(0, v)) * _P1) + _P4) & _M


def xxh64(data: bytes | memoryview, seed: int = 0) -> int:
    data = memoryview(data).cast("B")
    n = len(data)
    i = 0
    if n >= 32:
        v1, v2, v3, v4 = (seed + _P1 + _P2) & _M, (seed + _P2) & _M, seed, (seed - _P1) & _M
        stripes = n // 32
        lanes = np.frombuffer(data[:stripes * 32], dtype="<u8").tolist()
        for s in range(0, 4 * stripes, 4):
            v1 = _round(v1, lanes[s])
            v2 = _round(v2, lanes[s + 1])
            v3 = _round(v3, lanes[s + 2])
            v4 = _round(v4, lanes[s + 3])
        i = stripes * 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M
        for v in (v1, v2, v3, v4):
            h = _merge(h, v)
    else:
        h = (seed + _P5) & _M
    h = (h + n) & _M
    while n - i >= 8:
        h ^= _round(0, struct.unpack_from("<Q", data, i)[0])
        h = (_rotl(h, 27) * _P1 + _P4) & _M
        i += 8
    if n - i >= 4:
        h ^= (struct.unpack_from("<I", data, i)[0] * _P1) & _M
        h = (_rotl(h, 23) * _P2 + _P3) & _M
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _M
        h = (_rotl(h, 11) * _P1) & _M
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _M
    h ^= h >> 29
    h = (h * _P3) & _M
    h ^= h >> 32
    return h


# ---------------------------------------------------------------------------------------------
# Protobuf wire format, by hand.
# ---------------------------------------------------------------------------------------------

def _varint(buf: memoryview, pos: int, end: int, place: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise RNWError(f"{place}: truncated or overlong varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & _M, pos
        shift += 7


def _fields(buf: memoryview, place: str):
    """Yields (field number, wire type, value): an int for varint / fixed, a memoryview for bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end, place)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end, place)
        elif wire == 1:
            if end - pos < 8:
                raise RNWError(f"{place}: truncated 64-bit field {number}")
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos, end, place)
            if length > end - pos:
                raise RNWError(f"{place}: field {number} runs past the end of its message")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 5:
            if end - pos < 4:
                raise RNWError(f"{place}: truncated 32-bit field {number}")
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise RNWError(f"{place}: unsupported wire type {wire} for field {number}")
        yield number, wire, value


def _text(v: memoryview, place: str) -> str:
    try:
        return bytes(v).decode("utf-8")
    except UnicodeDecodeError as e:
        raise RNWError(f"{place}: string is not UTF-8 ({e})") from None


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _repeated_varints(wire: int, value, place: str) -> list[int]:
    if wire == 0:
        return [value]
    out, pos, end = [], 0, len(value)
    while pos < end:
        v, pos = _varint(value, pos, end, place)
        out.append(v)
    return out


def _tensor_entry(buf: memoryview) -> dict:
    e = {"name": "", "dtype": 0, "shape": [], "offset": 0, "length": 0, "checksum": 0, "scales": []}
    for number, wire, value in _fields(buf, "manifest tensor entry"):
        if number == 1 and wire == 2:
            e["name"] = _text(value, "tensor name")
        elif number == 2 and wire == 0:
            e["dtype"] = value
        elif number == 3:
            e["shape"] += [_signed64(v) for v in _repeated_varints(wire, value, "tensor shape")]
        elif number == 4 and wire == 0:
            e["offset"] = value
        elif number == 5 and wire == 0:
            e["length"] = value
        elif number == 6 and wire == 0:
            e["checksum"] = value
        elif number == 7:
            raw = bytes(value)
            if len(raw) % 4:
                raise RNWError(f"tensor {e['name']}: scales are not whole float32 values")
            e["scales"] += list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return e


def _provenance(buf: memoryview) -> dict:
    names = {1: "source_format", 2: "source_path", 3: "source_sha256", 4: "scheme", 6: "tool_version"}
    p = {n: "" for n in names.values()}
    p["unwrapping_notes"] = []
    for number, wire, value in _fields(buf, "manifest provenance"):
        if wire != 2:
            continue
        if number in names:
            p[names[number]] = _text(value, "provenance")
        elif number == 5:
            p["unwrapping_notes"].append(_text(value, "provenance"))
    return p


def _parity(buf: memoryview) -> dict:
    doubles = {3: "max_abs_error", 4: "max_rel_error", 5: "cosine", 6: "top1_agreement", 7: "tolerance"}
    r = {"passed": False, "reference": "", "policy": "", **{n: 0.0 for n in doubles.values()}}
    for number, wire, value in _fields(buf, "manifest parity record"):
        if number == 1 and wire == 0:
            r["passed"] = value != 0
        elif number == 2 and wire == 2:
            r["reference"] = _text(value, "parity reference")
        elif number == 8 and wire == 2:
            r["policy"] = _text(value, "parity policy")
        elif number in doubles and wire == 1:
            r[doubles[number]] = struct.unpack("<d", bytes(value))[0]
    return r


def decode_manifest(buf: bytes | memoryview) -> dict:
    """The rnw.Manifest message as a dict (field names as in rnw.proto)."""
    m = {"format_major": 0, "format_minor": 0, "spec_json": b"", "tensors": [], "provenance": None,
         "parity": [], "metadata": {}}
    for number, wire, value in _fields(memoryview(buf), "manifest"):
        if number == 1 and wire == 0:
            m["format_major"] = value
        elif number == 2 and wire == 0:
            m["format_minor"] = value
        elif number == 3 and wire == 2:
            m["spec_json"] = bytes(value)
        elif number == 4 and wire == 2:
            m["tensors"].append(_tensor_entry(value))
        elif number == 5 and wire == 2:
            m["provenance"] = _provenance(value)
        elif number == 6 and wire == 2:
            m["parity"].append(_parity(value))
        elif number == 7 and wire == 2:
            key = val = ""
            for n, w, v in _fields(value, "manifest metadata entry"):
                if n == 1 and w == 2:
                    key = _text(v, "metadata key")
                elif n == 2 and w == 2:
                    val = _text(v, "metadata value")
            m["metadata"][key] = val
    return m


# ---------------------------------------------------------------------------------------------
# The file.
# ---------------------------------------------------------------------------------------------

class RNWFile:
    """A validated .rnw image: `manifest` (dict), `spec` (dict) and `tensor(name)`."""

    def __init__(self, data: bytes, verify: bool = True, path: str = "<bytes>"):
        self.path = path
        self._data = memoryview(data)
        size = len(data)

        def fail(place: str, reason: str):
            raise RNWError(f"{path}: {place}: {reason}")

        if bytes(self._data[:8]) != MAGIC[:min(8, size)] or size < HEADER_SIZE:
            fail("header", "not an .rnw file (bad magic) or shorter than the 40-byte header")
        major, minor, flags, mlen, msum, hsum = struct.unpack_from("<HHIQQQ", data, 8)
        if xxh64(self._data[:32]) != hsum:
            fail("header", "checksum mismatch: header is corrupt")
        if major > SUPPORTED_MAJOR:
            fail("header", f"format {major}.{minor} is newer than this reader's {SUPPORTED_MAJOR}.x")
        if major != SUPPORTED_MAJOR:
            fail("header", f"format major version {major} was never released")
        if flags != 0:
            fail("header", f"unknown flags 0x{flags:x}")
        if mlen > size - HEADER_SIZE:
            fail("manifest", "runs past the end of the file: truncated")
        manifest_end = HEADER_SIZE + mlen
        mbytes = self._data[HEADER_SIZE:manifest_end]
        if xxh64(mbytes) != msum:
            fail("manifest", "checksum mismatch: manifest is corrupt")
        self.version = (major, minor)
        self.manifest = decode_manifest(mbytes)
        if (self.manifest["format_major"], self.manifest["format_minor"]) != (major, minor):
            fail("manifest", "format version differs from the header's")
        try:
            self.spec = json.loads(self.manifest["spec_json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            fail("manifest spec_json", f"not valid JSON ({e})")

        self._entries = {}
        cursor = manifest_end
        for e in sorted(self.manifest["tensors"], key=lambda t: t["offset"]):
            place = f"tensor {e['name']}"
            dtype = DTYPES.get(e["dtype"])
            if dtype is None:
                fail(place, f"unknown dtype value {e['dtype']}")
            if e["name"] in self._entries or not e["name"]:
                fail(place, "empty or repeated name")
            if any(d < 0 for d in e["shape"]):
                fail(place, f"negative dimension in {e['shape']}")
            count = int(np.prod(e["shape"], dtype=object)) if e["shape"] else 1
            if count * DTYPE_SIZE[dtype] != e["length"]:
                fail(place, f"length {e['length']} does not match shape {e['shape']} at {dtype}")
            if e["offset"] % 64 or e["offset"] < cursor or e["length"] > size - e["offset"]:
                fail(place, f"bytes {e['offset']}..{e['offset'] + e['length']} are misaligned, overlap or run past the end")
            if dtype == "I8":
                if not e["shape"] or len(e["scales"]) != e["shape"][0]:
                    fail(place, "int8 tensor needs one scale per output channel")
            elif e["scales"]:
                fail(place, "scales are only allowed on int8 tensors")
            if any(self._data[cursor:e["offset"]]):
                fail(f"padding before {place}", "non-zero padding byte: file is corrupt")
            if verify and xxh64(self._data[e["offset"]:e["offset"] + e["length"]]) != e["checksum"]:
                fail(place, "checksum mismatch: tensor data is corrupt")
            cursor = e["offset"] + e["length"]
            self._entries[e["name"]] = dict(e, dtype=dtype)
        if cursor != size:
            fail("end of file", f"{size - cursor} bytes follow the last tensor")

    @property
    def names(self) -> list[str]:
        """Tensor names in manifest order."""
        return [e["name"] for e in self.manifest["tensors"]]

    def entry(self, name: str) -> dict:
        return self._entries[name]

    def raw(self, name: str) -> np.ndarray:
        """The stored values without conversion (float32, float16, bfloat16 as uint16, or int8)."""
        e = self._entries[name]
        np_dtype = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I8": "i1"}[e["dtype"]]
        buf = self._data[e["offset"]:e["offset"] + e["length"]]
        return np.frombuffer(buf, dtype=np_dtype).reshape(e["shape"])

    def tensor(self, name: str) -> np.ndarray:
        """The tensor as float32, widened exactly as the Swift reader does (int8: q * scale, in float32)."""
        e = self._entries[name]
        raw = self.raw(name)
        if e["dtype"] == "F32":
            return raw.astype(np.float32)
        if e["dtype"] == "F16":
            return raw.astype(np.float32)
        if e["dtype"] == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        scales = np.asarray(e["scales"], dtype=np.float32).reshape((-1,) + (1,) * (raw.ndim - 1))
        return raw.astype(np.float32) * scales


def read(path: str, verify: bool = True) -> RNWFile:
    """Opens and validates `path` (the whole file is read into memory)."""
    with open(path, "rb") as f:
        return RNWFile(f.read(), verify=verify, path=path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--npz", help="write every tensor as float32 into this .npz")
    ap.add_argument("--no-verify", action="store_true", help="skip per-tensor checksums")
    a = ap.parse_args()
    try:
        f = read(a.file, verify=not a.no_verify)
    except (RNWError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(3)
    print(f"{a.file}: rnw {f.version[0]}.{f.version[1]}, {f.spec.get('family')}, "
          f"{f.spec.get('classes')} classes, {len(f.names)} tensors"
          + ("" if a.no_verify else ", all checksums verified"))
    for n in f.names:
        e = f.entry(n)
        print(f"  {n:40s} {e['dtype']:4s} {e['shape']}")
    if a.npz:
        np.savez(a.npz, **{n: f.tensor(n) for n in f.names})


if __name__ == "__main__":
    main()
