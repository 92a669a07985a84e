#ifndef RESNETKIT_CSHA256_H
#define RESNETKIT_CSHA256_H

// SHA-256 compression with the x86 SHA extensions (SHA-NI). Only
// Sources/ResNetKit/Tensor/SHA256.swift calls it; it falls back to its own Swift
// code when csha256_hw_available() is 0 (other CPUs, other architectures).

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU runs the SHA-NI path (SHA, SSSE3 and SSE4.1 present), else 0.
int csha256_hw_available(void);

/// Runs the compression function over `blocks` 64-byte blocks at `data`, updating
/// `state` (h0..h7 as FIPS 180-4 numbers them). Only call when csha256_hw_available().
void csha256_hw_blocks(uint32_t state[8], const uint8_t *data, size_t blocks);

#endif
