#ifndef CKERNELS_H
#define CKERNELS_H

// Umbrella header of the CKernels module: every header of this target is listed here, so that
// adding one changes this file and rebuilds the module (with an umbrella directory, a cached
// module did not notice a new header).
#include "ckernels_cpu.h"
#include "ckernels_transpose.h"
#include "ckernels_grouped.h"
#include "ckernels_gemm.h"
#include "ckernels_winograd.h"
#include "ckernels_pool.h"

#endif
