"""Damaged, truncated and crafted files: every one is refused with RNWError naming file, place
and reason; no other exception escapes (KeyError, IndexError, struct.error, MemoryError, ...)."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

import rnw
from conftest import GOLDEN_RNW, parts, write_image

SMALL = next(p for p in GOLDEN_RNW if "int8" in p.name)  # int8 + f32 tensors, the most rules
F32 = next(p for p in GOLDEN_RNW if ".f32." in p.name)


def refused(tmp_path, data: bytes, place: str | None = None, reason: str | None = None, verify=True):
    path = tmp_path / "bad.rnw"
    path.write_bytes(data)
    with pytest.raises(rnw.RNWError) as info:
        rnw.load(path, verify=verify)
    err = info.value
    assert err.file == str(path) and str(path) in str(err)
    if place is not None:
        assert place in err.place, str(err)
    if reason is not None:
        assert reason in err.reason, str(err)
    return err


def test_a_rewritten_image_is_valid(tmp_path):
    # The baseline for everything below: the test writer itself makes files the reader accepts.
    m, blobs = parts(SMALL)
    path = tmp_path / "ok.rnw"
    path.write_bytes(write_image(m, blobs))
    assert rnw.load(path).keys() == rnw.load(SMALL).keys()


@pytest.mark.parametrize("path", [SMALL, F32], ids=["int8", "f32"])
def test_every_truncation_is_refused(tmp_path, path):
    image = path.read_bytes()
    mlen = struct.unpack_from("<Q", image, 16)[0]
    cuts = sorted(set([0, 1, 7, 8, 20, 39, 40, 41, 40 + mlen // 2, 40 + mlen, 40 + mlen + 1, len(image) - 1]
                      + list(range(100, len(image), max(1, len(image) // 40)))))
    for n in cuts:
        refused(tmp_path, image[:n])


def test_trailing_bytes_are_refused(tmp_path):
    refused(tmp_path, F32.read_bytes() + b"\0", "end of file", "bytes follow")


def test_flipped_bytes_are_found_everywhere(tmp_path):
    image = SMALL.read_bytes()
    rng = np.random.default_rng(1)
    for i in list(range(0, 48)) + list(rng.integers(48, len(image), 60)):
        bad = bytearray(image)
        bad[i] ^= 0x10
        refused(tmp_path, bytes(bad))


def test_open_without_verify_still_checks_header_manifest_and_padding_but_not_data(tmp_path):
    m, blobs = parts(SMALL)
    good = write_image(m, blobs)
    last = m["tensors"][-1]
    bad = bytearray(good)
    bad[-1] ^= 1  # inside the last tensor's data
    path = tmp_path / "data.rnw"
    path.write_bytes(bytes(bad))
    with rnw.open(path) as f:  # tensor checksums are not read on open
        with pytest.raises(rnw.RNWError, match="checksum mismatch") as info:
            f.verify(backend="python")
        assert last["name"] in info.value.place
        if rnw.checksum_backend() == "xxhash":
            with pytest.raises(rnw.RNWError, match="checksum mismatch"):
                f.verify(backend="xxhash")


def _mutated(tmp_path, mutate, **kw):
    m, blobs = parts(SMALL)
    return write_image(m, blobs, mutate=mutate, **kw)


def _entry(m, dtype=None):
    return next(e for e in m["tensors"] if dtype is None or e["dtype"] == dtype)


CASES = {
    "offset past the end": (lambda m: _entry(m).update(offset=1 << 40), "run past the end"),
    "offset 2^64-64": (lambda m: _entry(m).update(offset=(1 << 64) - 64), "run past the end"),
    "misaligned offset": (lambda m: _entry(m).update(offset=_entry(m)["offset"] + 8), "not a multiple of 64"),
    "offset inside the manifest": (lambda m: _entry(m).update(offset=64), "inside the header or manifest"),
    "overlapping tensors": (lambda m: m["tensors"][1].update(offset=m["tensors"][0]["offset"]), "overlap"),
    "length past the end": (lambda m: _entry(m).update(length=(1 << 64) - 1), "does not equal"),
    "huge shape": (lambda m: _entry(m).update(shape=[1 << 62, 1 << 62]), "does not equal"),
    "negative dimension": (lambda m: _entry(m).update(shape=[-1] + _entry(m)["shape"][1:]), "dimension 0 is -1"),
    "a million dimensions": (lambda m: _entry(m).update(shape=[1] * 100_000), "does not equal"),
    # Large dimensions: the length check stops multiplying once the product passes the length (a big-
    # integer product of all of them took seconds at this size and grows with its square).
    "many huge dimensions": (lambda m: _entry(m).update(shape=[1 << 62] * 50_000), "does not equal"),
    "unknown dtype": (lambda m: _entry(m).update(dtype=99), "unknown dtype value 99"),
    "int8 without scales": (lambda m: _entry(m, 4).update(scales=[]), "one scale per output channel"),
    "int8 NaN scale": (lambda m: _entry(m, 4)["scales"].__setitem__(0, float("nan")), "finite"),
    "int8 negative scale": (lambda m: _entry(m, 4)["scales"].__setitem__(0, -1.0), "finite and >= 0"),
    "scales on float32": (lambda m: _entry(m, 1).update(scales=[1.0]), "only allowed on int8"),
    "duplicate name": (lambda m: m["tensors"][1].update(name=m["tensors"][0]["name"]), "more than once"),
    "empty name": (lambda m: _entry(m).update(name=""), "empty name"),
    "name not in spec": (lambda m: m["tensors"].append(dict(m["tensors"][-1], name="nope.weight")), "not a parameter of the spec"),
    "missing tensor": (lambda m: m["tensors"].pop(), "no entry"),
    "wrong shape": (lambda m: _entry(m, 1).update(shape=[_entry(m, 1)["shape"][0] * 2], length=2 * _entry(m, 1)["length"]), None),
    "spec not JSON": (lambda m: m.update(spec_json=b"{not json"), "not valid UTF-8 JSON"),
    "spec not UTF-8": (lambda m: m.update(spec_json=b"\xff\xfe"), "not valid UTF-8 JSON"),
    "spec nested deeply": (lambda m: m.update(spec_json=b"[" * 200_000 + b"]" * 200_000), None),
    "spec wrong types": (lambda m: m.update(spec_json=b'{"family": 1, "stem": "x"}'), "spec.family"),
    "spec is a list": (lambda m: m.update(spec_json=b"[]"), "not a JSON object"),
    "version differs": (lambda m: m.update(format_minor=0), "header says 1.1"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_crafted_manifests_are_refused(tmp_path, case):
    mutate, reason = CASES[case]
    refused(tmp_path, _mutated(tmp_path, mutate), reason=reason)


def test_spec_rule_breaks_are_refused(tmp_path):
    import json

    def bad_channels(m):
        spec = json.loads(m["spec_json"])
        spec["stem"][0]["groups"] = 0
        m["spec_json"] = json.dumps(spec, separators=(",", ":"), sort_keys=True).encode()
    refused(tmp_path, _mutated(tmp_path, bad_channels), "spec_json", "groups")

    def huge_epsilon(m):
        # Valid JSON whose integer no float holds: refused, not an OverflowError.
        text = m["spec_json"].decode()
        at = text.index('"epsilon":') + len('"epsilon":')
        end = min(i for i in (text.find(",", at), text.find("}", at)) if i >= 0)
        m["spec_json"] = (text[:at] + "1" + "0" * 400 + text[end:]).encode()
    refused(tmp_path, _mutated(tmp_path, huge_epsilon), "spec_json", "epsilon")


def test_header_fields(tmp_path):
    refused(tmp_path, _mutated(tmp_path, None, major=2), "header", "newer than this reader")
    refused(tmp_path, _mutated(tmp_path, None, major=0), "header", "never released")
    refused(tmp_path, _mutated(tmp_path, None, flags=1), "header", "flags")
    refused(tmp_path, _mutated(tmp_path, None, manifest_length=(1 << 64) - 1), "manifest", "runs past the end")
    refused(tmp_path, b"PK\x03\x04" + bytes(100), "header bytes 0..<8", "magic")
    refused(tmp_path, b"", "header", "shorter than the 40-byte header")


def test_malformed_protobuf(tmp_path):
    m, blobs = parts(SMALL)
    good = write_image(m, blobs)
    mlen = struct.unpack_from("<Q", good, 16)[0]
    from conftest import _field, _varint

    def with_manifest(extra: bytes):
        from rnw import _xxh64
        mb = good[40:40 + mlen] + extra
        head = good[:16] + struct.pack("<QQ", len(mb), _xxh64.xxh64(mb))
        head += struct.pack("<Q", _xxh64.xxh64(head))
        return head + mb  # no tensors follow: the manifest must fail before that matters

    for extra, reason in [
        (b"\x80" * 11, "varint"),                         # a key that never ends
        (_varint(4 << 3 | 2) + _varint(1 << 60), "declared"),  # a tensor entry longer than the manifest
        (_varint(4 << 3 | 3), "wire type 3"),             # a group
        (_varint(1 << 3 | 2) + b"\x00", "should be varint"),  # format_major as bytes
        (_field(4, 2, _field(7, 2, b"\x00\x00\x80")), "whole float32"),
        (_field(4, 2, _field(1, 2, b"a\x00b")), "NUL"),
        (_field(4, 2, _field(1, 2, b"\xc3\x28")), "not UTF-8"),
        (_varint(0), "field number 0"),
    ]:
        refused(tmp_path, with_manifest(extra), reason=reason)


def _reseal(image: bytes, manifest: bytes) -> bytes:
    """`image` with its manifest replaced by `manifest` (which must fit before the first tensor:
    write_image leaves room) and the header's length and checksums made right for it."""
    from rnw import _xxh64
    old = struct.unpack_from("<Q", image, 16)[0]
    head = image[:16] + struct.pack("<QQ", len(manifest), _xxh64.xxh64(manifest))
    head += struct.pack("<Q", _xxh64.xxh64(head))
    grow = max(0, len(manifest) - old)
    rest = image[40 + old + grow:]
    assert not any(image[40 + old:40 + old + grow]), "no room before the first tensor"
    return head + manifest + bytes(max(0, old - len(manifest))) + rest


def test_unknown_manifest_fields_are_skipped(tmp_path):
    # A later minor version may add fields; a reader must skip them, whatever their wire type.
    from conftest import _field
    m, blobs = parts(SMALL)
    image = write_image(m, blobs)
    mlen = struct.unpack_from("<Q", image, 16)[0]
    extra = _field(99, 2, b"future") + _field(98, 0, 5) + _field(97, 5, b"abcd") + _field(96, 1, b"12345678")
    path = tmp_path / "future.rnw"
    path.write_bytes(_reseal(image, image[40:40 + mlen] + extra))
    assert rnw.load(path).keys() == rnw.load(SMALL).keys()


def test_random_manifest_damage_with_valid_checksums(tmp_path):
    # Flip bytes inside the manifest and re-seal it: the protobuf and spec checks must hold alone.
    from rnw import _xxh64
    m, blobs = parts(SMALL)
    good = write_image(m, blobs)
    mlen = struct.unpack_from("<Q", good, 16)[0]
    rng = np.random.default_rng(3)
    others = 0
    for _ in range(400):
        mb = bytearray(good[40:40 + mlen])
        for i in rng.integers(0, mlen, rng.integers(1, 4)):
            mb[i] = int(rng.integers(0, 256))
        head = good[:24] + struct.pack("<Q", _xxh64.xxh64(bytes(mb)))
        head += struct.pack("<Q", _xxh64.xxh64(head))
        path = tmp_path / "fuzz.rnw"
        path.write_bytes(head + bytes(mb) + good[40 + mlen:])
        try:
            rnw.load(path)
        except rnw.RNWError:
            pass
        else:
            others += 1  # a byte in a float or an unread string can be changed harmlessly
    assert others < 400


def test_not_a_regular_file(tmp_path):
    with pytest.raises(rnw.RNWError, match="not a regular file"):
        rnw.open(tmp_path)
    if os.path.exists("/dev/null"):
        with pytest.raises(rnw.RNWError, match="not a regular file"):
            rnw.open("/dev/null")
    with pytest.raises(rnw.RNWError, match="cannot open"):
        rnw.open(tmp_path / "missing.rnw")
    fifo = tmp_path / "fifo"
    if hasattr(os, "mkfifo"):
        os.mkfifo(fifo)
        with pytest.raises(rnw.RNWError, match="not a regular file"):
            rnw.open(fifo)  # must not block waiting for a writer
