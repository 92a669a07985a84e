#ifndef RESNETKIT_CLINUXIO_SHIM_H
#define RESNETKIT_CLINUXIO_SHIM_H

// Linux file calls that Swift's Glibc module does not expose (they need _GNU_SOURCE), and the
// signal handler that keeps interrupted writes from leaving files behind.
// Imported by Sources/ResNetKit/RNW/RNWStreamWriter.swift (direct I/O) and
// Sources/ResNetKit/Tensor/AtomicOutput.swift (everything else). The handler's state is `static`:
// only AtomicOutput.swift may call the clinuxio_cleanup_* and clinuxio_interrupt_* functions, so
// that one copy of it exists.

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

// MARK: - Unnamed temporary files

/// Opens an unnamed regular file in `directory` (O_TMPFILE): it has no name until linked, so
/// nothing is left behind if the process dies. -1 with errno set where the file system or kernel
/// does not support it (EOPNOTSUPP, EISDIR on old kernels, EINVAL).
static inline int clinuxio_open_unnamed(const char *directory, unsigned mode) {
#if defined(__linux__) && defined(O_TMPFILE)
    return open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, (mode_t)mode);
#else
    (void)directory; (void)mode;
    errno = EOPNOTSUPP;
    return -1;
#endif
}

// MARK: - Cleanup on SIGINT, SIGTERM, SIGHUP

#define CLINUXIO_CLEANUP_SLOTS 8
#define CLINUXIO_PATH_BYTES 4096

/// Slot states. 0 free; 1 a named temporary file exists and is removed by the handler; 2 the file
/// is being created, linked or renamed by a thread that blocks these signals meanwhile, and the
/// handler (on another thread) waits for it to finish.
typedef struct {
    _Atomic int state;
    char path[CLINUXIO_PATH_BYTES];
} clinuxio_cleanup_slot_t;

typedef struct {
    clinuxio_cleanup_slot_t slots[CLINUXIO_CLEANUP_SLOTS];
    _Atomic int written;            // an output was put in place
    _Atomic int handling;           // a handler is running
    char activity[512];             // "conversion to out.rnw"
    _Atomic int activity_ready;
} clinuxio_interrupt_state_t;

/// The handler's state. A function-local static, because a module header cannot define a global
/// Swift would link; one copy as long as only one Swift file calls these functions (see above).
static inline clinuxio_interrupt_state_t *clinuxio_state(void) {
    static clinuxio_interrupt_state_t state;
    return &state;
}

/// Claims a slot for `path` in `state` (1 or 2); returns its index, or -1 when the path is too long
/// or all slots are taken (the caller then has no signal cleanup for this file).
static inline int clinuxio_cleanup_register(const char *path, int state) {
    size_t n = strlen(path);
    if (n >= CLINUXIO_PATH_BYTES) return -1;
    for (int i = 0; i < CLINUXIO_CLEANUP_SLOTS; i++) {
        int expected = 0;
        // 3 reserves the slot while the path is copied; the handler ignores it.
        if (atomic_compare_exchange_strong(&clinuxio_state()->slots[i].state, &expected, 3)) {
            memcpy(clinuxio_state()->slots[i].path, path, n + 1);
            atomic_store(&clinuxio_state()->slots[i].state, state);
            return i;
        }
    }
    return -1;
}

static inline void clinuxio_cleanup_set_state(int slot, int state) {
    if (slot >= 0 && slot < CLINUXIO_CLEANUP_SLOTS) atomic_store(&clinuxio_state()->slots[slot].state, state);
}

/// Nonzero once a handler has started. A thread that sets a slot to 2 and then sees this must not
/// link or rename: the handler may have passed that slot already.
static inline int clinuxio_interrupt_begun(void) { return atomic_load(&clinuxio_state()->handling); }

static inline void clinuxio_mark_written(void) { atomic_store(&clinuxio_state()->written, 1); }

/// Blocks (block != 0) or unblocks the three signals in the calling thread, so the thread that
/// links and renames an output is never the one interrupted in the middle of it.
static inline void clinuxio_block_interrupts(int block) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    (void)pthread_sigmask(block ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

/// What the one-line message says was interrupted; copied, truncated to fit.
static inline void clinuxio_interrupt_set_activity(const char *text) {
    atomic_store(&clinuxio_state()->activity_ready, 0);
    size_t n = strlen(text);
    if (n >= sizeof clinuxio_state()->activity) n = sizeof clinuxio_state()->activity - 1;
    memcpy(clinuxio_state()->activity, text, n);
    clinuxio_state()->activity[n] = 0;
    atomic_store(&clinuxio_state()->activity_ready, 1);
}

static inline void clinuxio_put(const char *text) {
    size_t n = strlen(text);
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, text, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        text += w; n -= (size_t)w;
    }
}

/// Only async-signal-safe calls: removes the registered temporary files, waits out a link and
/// rename in progress on another thread, prints one line, then dies of the same signal.
static inline void clinuxio_on_interrupt(int sig) {
    if (atomic_exchange(&clinuxio_state()->handling, 1)) return;   // a second signal: the first handler finishes
    for (int i = 0; i < CLINUXIO_CLEANUP_SLOTS; i++) {
        while (atomic_load(&clinuxio_state()->slots[i].state) == 2) sched_yield();
        if (atomic_load(&clinuxio_state()->slots[i].state) == 1 && clinuxio_state()->slots[i].path[0])
            (void)unlink(clinuxio_state()->slots[i].path);
    }
    clinuxio_put("interrupted: ");
    clinuxio_put(atomic_load(&clinuxio_state()->activity_ready) ? clinuxio_state()->activity : "resnet-convert");
    clinuxio_put(atomic_load(&clinuxio_state()->written) ? " stopped after its output was written\n"
                                                 : " stopped; nothing was written\n");
    signal(sig, SIG_DFL);
    raise(sig);
}

/// Installs the handler for SIGINT, SIGTERM and SIGHUP (not for signals the parent set to be
/// ignored, as `nohup` does for SIGHUP). Returns 0 or -1 with errno set.
static inline int clinuxio_interrupt_install(void) {
    int signals[] = { SIGINT, SIGTERM, SIGHUP };
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction old;
        if (sigaction(signals[i], NULL, &old) != 0) return -1;
        if (old.sa_handler == SIG_IGN) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = clinuxio_on_interrupt;
        sigemptyset(&sa.sa_mask);
        sigaddset(&sa.sa_mask, SIGINT);
        sigaddset(&sa.sa_mask, SIGTERM);
        sigaddset(&sa.sa_mask, SIGHUP);
        if (sigaction(signals[i], &sa, NULL) != 0) return -1;
    }
    return 0;
}

#endif
