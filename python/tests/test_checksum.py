"""The numpy XXH64 against the C xxhash package (and against published values)."""

from __future__ import annotations

import numpy as np
import pytest

import rnw
from rnw import _xxh64
from conftest import GOLDEN_RNW


def test_known_values():
    # XXH64 with seed 0 of the empty input and of "abc" (xxHash's reference values).
    assert _xxh64.xxh64(b"") == 0xEF46DB3751D8E999
    assert _xxh64.xxh64(b"abc") == 0x44BC2CF5AD770999


def test_agrees_with_the_xxhash_package_on_every_length_and_in_batches():
    xxhash = pytest.importorskip("xxhash", reason="the xxhash package is not installed")
    rng = np.random.default_rng(7)
    # Every tail length, both sides of the 32-byte stripe, and buffers spanning several blocks.
    lengths = list(range(0, 300)) + [4095, 4096 * 32 - 1, 4096 * 32, 4096 * 32 * 2 + 31, 1_000_003]
    buffers = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in lengths]
    expected = [xxhash.xxh64_intdigest(b) for b in buffers]
    assert _xxh64.xxh64_many(buffers) == expected
    shuffled = list(reversed(buffers))
    assert _xxh64.xxh64_many(shuffled) == list(reversed(expected))
    assert [rnw.xxh64(b, backend="python") for b in buffers[:40]] == expected[:40]
    assert [rnw.xxh64(b, backend="xxhash") for b in buffers[:40]] == expected[:40]


@pytest.mark.parametrize("path", GOLDEN_RNW, ids=[p.name for p in GOLDEN_RNW])
def test_both_backends_give_the_stored_checksums(path):
    with rnw.open(path) as f:
        for e in f.infos():
            data = f.raw(e.name)
            assert rnw.xxh64(memoryview(data).cast("B") if data.size else b"", backend="python") == e.checksum
            if rnw.checksum_backend() == "xxhash":
                assert rnw.xxh64(data, backend="xxhash") == e.checksum
