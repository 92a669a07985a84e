"""Shared helpers: paths, the Swift CLI (when RESNET_CONVERT names it), and a manifest encoder
that lets the hostile-file tests write well-checksummed files with one field made wrong."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rnw import _xxh64
from rnw._proto import decode_manifest

REPO = Path(__file__).resolve().parents[2]
GOLDEN_RNW = sorted((REPO / "fixtures" / "rnw").glob("*.rnw"))
TORCH_FIXTURES = REPO / "fixtures" / "torch"


def swift_cli() -> str:
    """The resnet-convert binary named by RESNET_CONVERT, or a visible skip."""
    path = os.environ.get("RESNET_CONVERT")
    if not path:
        pytest.skip("RESNET_CONVERT is not set: the comparison with the Swift reader needs the built CLI "
                    "(swift build; RESNET_CONVERT=.build/debug/resnet-convert)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"RESNET_CONVERT={path} is not an executable file")
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([swift_cli(), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"resnet-convert {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc


def read_safetensors(path) -> list[tuple[str, np.ndarray]]:
    """Tensors of a safetensors file in the order of their data (the order they were written)."""
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    # BF16 comes back as its raw uint16 bits (numpy has no bfloat16); `widen` turns any of these into float32.
    dtypes = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8"}
    out = []
    for name, h in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        a, b = h["data_offsets"]
        out.append((name, np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[h["dtype"]]).reshape(h["shape"])))
    return out


def widen(a: np.ndarray) -> np.ndarray:
    """float32 from float32, float16, or bfloat16 bits held as uint16 (exact in every case)."""
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


# -- writing .rnw images with chosen damage -----------------------------------------------------

def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, wire: int, payload) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    if wire == 2:
        return key + _varint(len(payload)) + bytes(payload)
    return key + bytes(payload)


def encode_manifest(m: dict) -> bytes:
    """The inverse of rnw._proto.decode_manifest (the fields the tests need)."""
    out = _field(1, 0, m["format_major"]) + _field(2, 0, m["format_minor"]) + _field(3, 2, m["spec_json"])
    for e in m["tensors"]:
        t = _field(1, 2, e["name"].encode()) + _field(2, 0, e["dtype"])
        t += _field(3, 2, b"".join(_varint(d) for d in e["shape"]))
        t += _field(4, 0, e["offset"]) + _field(5, 0, e["length"]) + _field(6, 0, e["checksum"])
        if e["scales"]:
            t += _field(7, 2, struct.pack(f"<{len(e['scales'])}f", *e["scales"]))
        out += _field(4, 2, t)
    for k, v in m["metadata"].items():
        out += _field(7, 2, _field(1, 2, k.encode()) + _field(2, 2, v.encode()))
    return out


def parts(path) -> tuple[dict, list[bytes]]:
    """(decoded manifest, each tensor's bytes in manifest order) of a valid file."""
    image = Path(path).read_bytes()
    mlen = struct.unpack_from("<Q", image, 16)[0]
    m = decode_manifest(image[40:40 + mlen])
    return m, [image[e["offset"]:e["offset"] + e["length"]] for e in m["tensors"]]


def _align(n: int) -> int:
    return (n + 63) // 64 * 64


def write_image(m: dict, blobs: list[bytes], mutate=None, major=None, minor=None, flags=0,
                manifest_length=None, slack=512) -> bytes:
    """A .rnw image of manifest `m` (offsets, lengths and checksums recomputed for `blobs`) with
    correct header and manifest checksums. `mutate(m)` then changes the manifest on purpose; the
    tensors stay where they were laid out (`slack` bytes leave room for a longer manifest)."""
    m = json.loads(json.dumps(m, default=lambda b: b.decode("latin-1")))  # deep copy
    m["spec_json"] = m["spec_json"].encode("latin-1") if isinstance(m["spec_json"], str) else m["spec_json"]
    cursor = _align(40 + len(encode_manifest(m)) + slack)
    for e, b in zip(m["tensors"], blobs):
        e["offset"], e["length"], e["checksum"] = cursor, len(b), _xxh64.xxh64(b)
        cursor = _align(cursor + len(b))
    end = m["tensors"][-1]["offset"] + len(blobs[-1]) if blobs else 40 + len(encode_manifest(m))
    body = bytearray(end)
    for e, b in zip(m["tensors"], blobs):
        body[e["offset"]:e["offset"] + len(b)] = b
    first = m["tensors"][0]["offset"] if blobs else len(body)
    major = m["format_major"] if major is None else major
    minor = m["format_minor"] if minor is None else minor
    if mutate is not None:
        mutate(m)
    mb = encode_manifest(m)
    if len(mb) > 40_000 + slack:
        slack = len(mb)  # a deliberately huge manifest: the tensors follow it
    assert 40 + len(mb) <= first or len(mb) > 40_000, "the mutated manifest outgrew the slack"
    mlen = len(mb) if manifest_length is None else manifest_length
    head = bytes([0x52, 0x4E, 0x57, 0x00, 0x0D, 0x0A, 0x1A, 0x0A]) + struct.pack(
        "<HHIQQ", major, minor, flags, mlen, _xxh64.xxh64(mb))
    head += struct.pack("<Q", _xxh64.xxh64(head))
    image = bytearray(head + mb)
    if blobs and 40 + len(mb) <= first:
        image += body[len(image):]
    elif blobs:
        image += bytes(_align(len(image)) - len(image)) + body[first:]
    return bytes(image)
