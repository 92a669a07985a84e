#ifndef RESNETKIT_CLINUXIO_SHIM_H
#define RESNETKIT_CLINUXIO_SHIM_H

// Linux file calls that Swift's Glibc module does not expose (they need _GNU_SOURCE).
// Only Sources/ResNetKit/RNW/RNWStreamWriter.swift imports this module.

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <stdint.h>

/// Starts writeback of a byte range without waiting for it (sync_file_range with
/// SYNC_FILE_RANGE_WRITE); returns 0 or -1 with errno set. A hint: fsync still makes it durable.
static inline int clinuxio_start_writeback(int fd, int64_t offset, int64_t length) {
#ifdef __linux__
    return sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

#endif
