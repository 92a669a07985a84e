#ifndef RESNETKIT_CLINUXIO_SHIM_H
#define RESNETKIT_CLINUXIO_SHIM_H

// Linux file calls that Swift's Glibc module does not expose (they need _GNU_SOURCE).
// Only Sources/ResNetKit/RNW/RNWStreamWriter.swift imports this module.

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>

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

/// Turns direct I/O (O_DIRECT: writes go from the caller's buffer to the device, bypassing the
/// page cache) on or off for an open descriptor; returns 0 or -1 with errno set (EINVAL where the
/// file system does not support it, e.g. tmpfs).
static inline int clinuxio_set_direct(int fd, int on) {
#if defined(__linux__) && defined(O_DIRECT)
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    flags = on ? (flags | O_DIRECT) : (flags & ~O_DIRECT);
    return fcntl(fd, F_SETFL, flags);
#else
    (void)fd; (void)on;
    errno = EINVAL;
    return -1;
#endif
}

/// The alignment direct I/O needs for file offsets and lengths (and for buffers, in *memory), as
/// the kernel reports it (statx STATX_DIOALIGN, Linux 6.1+); 0 when it does not say or the file
/// does not support direct I/O.
static inline int64_t clinuxio_direct_alignment(int fd, int64_t *memory) {
    *memory = 0;
#if defined(__linux__) && defined(STATX_DIOALIGN)
    struct statx st;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) != 0) return 0;
    if (!(st.stx_mask & STATX_DIOALIGN)) return 0;
    *memory = st.stx_dio_mem_align;
    return st.stx_dio_offset_align;
#else
    (void)fd;
    return 0;
#endif
}

#endif
