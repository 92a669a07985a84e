#ifndef RESNETKIT_CZLIB_SHIM_H
#define RESNETKIT_CZLIB_SHIM_H

// zlib (already a dependency of libhdf5: Debian's libhdf5-dev depends on zlib1g-dev), for its
// CRC-32 and for inflating deflated zip members with a size cap. Only Sources/ResNetKit/Tensor/CRC32.swift
// and Sources/ResNetKit/Tensor/ZipImage.swift import this module.
#include <zlib.h>

#endif
