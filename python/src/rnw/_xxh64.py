"""XXH64 (seed 0) in Python with numpy, for machines without the `xxhash` package.

XXH64 keeps four 64-bit accumulators, each updated by a serial chain over every fourth 8-byte lane,
so one buffer cannot be hashed faster than one round per 32 bytes. What numpy can do is run that
round for many buffers at once: `xxh64_many` advances the accumulators of every buffer that still
has stripes left with a handful of uint64 vector operations per stripe. A file's time is then set
by its largest tensor (one numpy step per 32 bytes of it), not by the sum of all tensors.
The short tail (< 32 bytes) and the final mixing of each buffer are done with Python integers.
"""

from __future__ import annotations

import struct

import numpy as np

_M = (1 << 64) - 1
P1 = 0x9E3779B185EBCA87
P2 = 0xC2B2AE3D27D4EB4F
P3 = 0x165667B19E3779F9
P4 = 0x85EBCA77C2B2AE63
P5 = 0x27D4EB2F165667C5

_NP1 = np.uint64(P1)
_NP2 = np.uint64(P2)
_S31 = np.uint64(31)
_S33 = np.uint64(33)

# Stripes gathered into one block; bounds the temporary copy to BLOCK * 32 bytes per buffer.
_BLOCK = 4096


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * P2) & _M, 31) * P1) & _M


def _finish(h: int, data: memoryview, i: int, n: int) -> int:
    """Folds in the bytes after the last whole stripe and applies the final avalanche."""
    h = (h + n) & _M
    while n - i >= 8:
        h ^= _round(0, struct.unpack_from("<Q", data, i)[0])
        h = (_rotl(h, 27) * P1 + P4) & _M
        i += 8
    if n - i >= 4:
        h ^= (struct.unpack_from("<I", data, i)[0] * P1) & _M
        h = (_rotl(h, 23) * P2 + P3) & _M
        i += 4
    while i < n:
        h ^= (data[i] * P5) & _M
        h = (_rotl(h, 11) * P1) & _M
        i += 1
    h ^= h >> 33
    h = (h * P2) & _M
    h ^= h >> 29
    h = (h * P3) & _M
    h ^= h >> 32
    return h


def _converge(v: tuple[int, int, int, int]) -> int:
    v1, v2, v3, v4 = v
    h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M
    for x in v:
        h = ((h ^ _round(0, x)) * P1 + P4) & _M
    return h


def _initial() -> list[int]:
    return [(P1 + P2) & _M, P2, 0, (-P1) & _M]


def xxh64_many(buffers: list) -> list[int]:
    """XXH64 (seed 0) of every buffer (bytes-like, C-contiguous), in the order given."""
    views = [memoryview(b).cast("B") for b in buffers]
    stripes = [len(v) // 32 for v in views]
    # Buffers with stripes, longest first: at stripe k the active ones are a prefix of this order.
    order = sorted((i for i, s in enumerate(stripes) if s > 0), key=lambda i: -stripes[i])
    acc = np.empty((len(order), 4), dtype=np.uint64)
    acc[:] = np.array(_initial(), dtype=np.uint64)
    lanes = [np.frombuffer(views[i], dtype="<u8", count=stripes[i] * 4).reshape(-1, 4) for i in order]
    t = np.empty_like(acc)
    k = 0
    total = stripes[order[0]] if order else 0
    while k < total:
        active = sum(1 for i in order if stripes[i] > k)
        # Every active buffer has at least `run` more stripes, so the active set is fixed in this block.
        run = min(_BLOCK, min(stripes[order[j]] for j in range(active)) - k)
        # block[s] holds stripe k+s of every active buffer, lanes side by side: (run, active, 4).
        block = np.empty((run, active, 4), dtype=np.uint64)
        for j in range(active):
            block[:, j, :] = lanes[j][k:k + run]
        block = block.reshape(run, active * 4)
        a = acc[:active].reshape(-1)
        tt = t[:active].reshape(-1)
        mul, add, shl, shr, bor = np.multiply, np.add, np.left_shift, np.right_shift, np.bitwise_or
        for s in range(run):
            mul(block[s], _NP2, out=tt)
            add(a, tt, out=a)
            shl(a, _S31, out=tt)
            shr(a, _S33, out=a)
            bor(a, tt, out=a)
            mul(a, _NP1, out=a)
        acc[:active] = a.reshape(active, 4)
        k += run
    out = [0] * len(views)
    for j, i in enumerate(order):
        h = _converge(tuple(int(x) for x in acc[j]))
        out[i] = _finish(h, views[i], stripes[i] * 32, len(views[i]))
    for i, s in enumerate(stripes):
        if s == 0:
            out[i] = _finish((P5) & _M, views[i], 0, len(views[i]))
    return out


def xxh64(data) -> int:
    """XXH64 (seed 0) of one bytes-like object."""
    return xxh64_many([data])[0]
