"""The protobuf wire format of the `rnw.Manifest` message (tools/rnw.proto), decoded by hand.

No protobuf runtime is needed: a manifest is a few kilobytes of varints, fixed-width numbers and
length-delimited fields, read here against the field numbers of rnw.proto. As protobuf requires,
fields this reader does not know are skipped, so later minor versions still read; a known field
that arrives with the wrong wire type is refused, as the C reader of the Swift tool refuses it.
Every length is checked against the bytes that are left before it is used.
"""

from __future__ import annotations

import struct

_M64 = (1 << 64) - 1


class WireError(Exception):
    """Malformed protobuf bytes; `place` says which message, the text says what."""

    def __init__(self, place: str, reason: str):
        super().__init__(f"{place}: {reason}")
        self.place = place
        self.reason = reason


def _varint(buf: memoryview, pos: int, end: int, place: str) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError(place, "a varint runs past the end of its message (truncated)")
        if shift >= 70:
            raise WireError(place, "a varint is longer than 10 bytes")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value & _M64, pos
        shift += 7


_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}


def fields(buf: memoryview, place: str):
    """Yields (field number, wire type, value): an int for varints, a memoryview otherwise."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end, place)
        number, wire = key >> 3, key & 7
        if number == 0 or number > 0x1FFFFFFF:
            raise WireError(place, f"field number {number} is not valid")
        if wire == 0:
            value, pos = _varint(buf, pos, end, place)
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if end - pos < size:
                raise WireError(place, f"field {number}: {size}-byte value runs past the end of its message (truncated)")
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            length, pos = _varint(buf, pos, end, place)
            if length > end - pos:
                raise WireError(place, f"field {number}: {length} bytes declared, {end - pos} left in its message (truncated)")
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise WireError(place, f"field {number} has wire type {wire}, which rnw manifests never use")
        yield number, wire, value


def _expect(number: int, wire: int, want: int, place: str) -> None:
    if wire != want:
        raise WireError(place, f"field {number} should be {_WIRE_NAMES[want]} but is {_WIRE_NAMES.get(wire, wire)}")


def _text(value: memoryview, place: str) -> str:
    raw = bytes(value)
    if b"\0" in raw:
        # The Swift reader passes strings through C, where a NUL would silently end them.
        raise WireError(place, "text contains a NUL character")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WireError(place, f"text is not UTF-8 ({e.reason} at byte {e.start})") from None


def _packed_varints(number: int, wire: int, value, place: str) -> list[int]:
    if wire == 0:
        return [value]
    _expect(number, wire, 2, place)
    out, pos, end = [], 0, len(value)
    while pos < end:
        v, pos = _varint(value, pos, end, place)
        out.append(v)
    return out


def _packed_floats(number: int, wire: int, value, place: str) -> list[float]:
    if wire == 5:
        return [struct.unpack("<f", value)[0]]
    _expect(number, wire, 2, place)
    if len(value) % 4:
        raise WireError(place, f"field {number}: {len(value)} bytes are not whole float32 values")
    return list(struct.unpack(f"<{len(value) // 4}f", value))


def _tensor_entry(buf: memoryview, index: int) -> dict:
    place = f"manifest tensor #{index}"
    e = {"name": "", "dtype": 0, "shape": [], "offset": 0, "length": 0, "checksum": 0, "scales": []}
    for number, wire, value in fields(buf, place):
        if number == 1:
            _expect(number, wire, 2, place)
            e["name"] = _text(value, place + " name")
        elif number == 2:
            _expect(number, wire, 0, place)
            v = value & 0xFFFFFFFF  # an enum is an int32 on the wire
            e["dtype"] = v - (1 << 32) if v >= 1 << 31 else v
        elif number == 3:
            for v in _packed_varints(number, wire, value, place):
                e["shape"].append(v - (1 << 64) if v >= 1 << 63 else v)
        elif number in (4, 5, 6):
            _expect(number, wire, 0, place)
            e[{4: "offset", 5: "length", 6: "checksum"}[number]] = value
        elif number == 7:
            e["scales"] += _packed_floats(number, wire, value, place)
    return e


_PROVENANCE = {1: "source_format", 2: "source_path", 3: "source_sha256", 4: "scheme", 6: "tool_version"}


def _provenance(buf: memoryview, p: dict) -> None:
    place = "manifest provenance"
    for number, wire, value in fields(buf, place):
        if number in _PROVENANCE:
            _expect(number, wire, 2, place)
            p[_PROVENANCE[number]] = _text(value, place)
        elif number == 5:
            _expect(number, wire, 2, place)
            p["unwrapping_notes"].append(_text(value, place))


_PARITY_DOUBLES = {3: "max_abs_error", 4: "max_rel_error", 5: "cosine", 6: "top1_agreement", 7: "tolerance"}


def _parity(buf: memoryview, index: int) -> dict:
    place = f"manifest parity record #{index}"
    r = {"passed": False, "reference": "", **{n: 0.0 for n in _PARITY_DOUBLES.values()}, "policy": ""}
    for number, wire, value in fields(buf, place):
        if number == 1:
            _expect(number, wire, 0, place)
            r["passed"] = value != 0
        elif number in (2, 8):
            _expect(number, wire, 2, place)
            r["reference" if number == 2 else "policy"] = _text(value, place)
        elif number in _PARITY_DOUBLES:
            _expect(number, wire, 1, place)
            r[_PARITY_DOUBLES[number]] = struct.unpack("<d", value)[0]
    return r


def decode_manifest(data) -> dict:
    """The `rnw.Manifest` message as a dict whose keys are the field names of rnw.proto.

    Raises WireError for bytes that are not a well-formed message.
    """
    buf = memoryview(data).cast("B")
    m = {"format_major": 0, "format_minor": 0, "spec_json": b"", "tensors": [], "provenance": None,
         "parity": [], "metadata": {}}
    for number, wire, value in fields(buf, "manifest"):
        if number in (1, 2):
            _expect(number, wire, 0, "manifest")
            m["format_major" if number == 1 else "format_minor"] = value & 0xFFFFFFFF
        elif number == 3:
            _expect(number, wire, 2, "manifest")
            m["spec_json"] = bytes(value)
        elif number == 4:
            _expect(number, wire, 2, "manifest")
            m["tensors"].append(_tensor_entry(value, len(m["tensors"])))
        elif number == 5:
            _expect(number, wire, 2, "manifest")
            if m["provenance"] is None:
                m["provenance"] = {n: "" for n in _PROVENANCE.values()}
                m["provenance"]["unwrapping_notes"] = []
            _provenance(value, m["provenance"])  # a repeated message field merges, as protobuf does
        elif number == 6:
            _expect(number, wire, 2, "manifest")
            m["parity"].append(_parity(value, len(m["parity"])))
        elif number == 7:
            _expect(number, wire, 2, "manifest")
            key = val = ""
            for n, w, v in fields(value, "manifest metadata entry"):
                if n in (1, 2):
                    _expect(n, w, 2, "manifest metadata entry")
                    if n == 1:
                        key = _text(v, "manifest metadata key")
                    else:
                        val = _text(v, "manifest metadata value")
            m["metadata"][key] = val
    return m
