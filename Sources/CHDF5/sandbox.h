#ifndef RESNETKIT_CHDF5_SANDBOX_H
#define RESNETKIT_CHDF5_SANDBOX_H

// MARK: - The sandboxed reader child
//
// Every libhdf5 call on an untrusted file runs in a child process forked for that file. The child
// runs only this C code, libc and libhdf5 (no Swift runtime: the parent is multi-threaded, and
// only the forking thread exists in the child), under:
//   - a seccomp filter: reads, memory management, its own socket end for answers, nothing else
//     (no exec, no new sockets, no writes to any other descriptor, no executable mappings);
//     files may be opened read-only only while libhdf5 opens the input by its path, and not at
//     all afterwards (an external-storage or virtual dataset then fails to open its other file);
//   - an address-space limit (what the process had at fork plus a size the parent derives from
//     the file) and a CPU-time limit.
// The parent sends small requests over a socket pair and reads framed answers, which it checks as
// untrusted input (`HDF5Sandbox` in HDF5.swift). Fork rather than re-executing a helper binary:
// the library is used inside other programs (tests, loaders) that have no such entry point, and
// the child never returns to Swift code.

#include <stdint.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

/// Requests; each starts with a 16-byte header {u32 op, u32 0, u64 payload length}.
enum {
    CHDF5_OP_KIND = 1,          // i64 loc, str name → i32 kind, str stack
    CHDF5_OP_GROUP_OPEN = 2,    // i64 loc, str name → i64 gid (or -1), str stack
    CHDF5_OP_CLOSE = 3,         // i64 id → no answer
    CHDF5_OP_MEMBERS = 4,       // str path, u32 creation order → see chdf5_sb_members
    CHDF5_OP_ATTRIBUTE = 5,     // i64 loc, str object, str attribute → see chdf5_sb_attribute
    CHDF5_OP_DATASET_INFO = 6,  // i64 loc, str name, u32 want location → see chdf5_sb_dataset_info
    CHDF5_OP_DATASET_READ = 7,  // i64 did (or -1), str path, u64 count → float32 values
};

/// Answer statuses shared by all requests (each request adds its own from 16 on).
enum {
    CHDF5_ANSWER_OK = 0,
    /// str what, str libhdf5's error stack.
    CHDF5_ANSWER_ERROR = 1,
};

/// Most bytes of one request (requests carry names, never data).
#define CHDF5_SB_MAX_REQUEST (1u << 20)
/// Longest error-stack text sent back.
#define CHDF5_SB_STACK 4096

/// Limits the child keeps to (the parent checks the answers against the same values).
typedef struct {
    uint64_t max_header_bytes;
    uint64_t max_group_members;
    uint64_t max_attribute_elements;
} chdf5_sb_limits_t;

// MARK: Answer buffer

typedef struct {
    uint8_t *data;
    size_t used, capacity;
    int failed;
} chdf5_sb_buf_t;

static inline void chdf5_sb_put(chdf5_sb_buf_t *b, const void *p, size_t n) {
    if (b->failed) return;
    if (b->used + n < b->used) { b->failed = 1; return; }
    if (b->used + n > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 4096;
        while (capacity < b->used + n) {
            if (capacity > SIZE_MAX / 2) { b->failed = 1; return; }
            capacity *= 2;
        }
        uint8_t *data = (uint8_t *)realloc(b->data, capacity);
        if (data == NULL) { b->failed = 1; return; }
        b->data = data;
        b->capacity = capacity;
    }
    memcpy(b->data + b->used, p, n);
    b->used += n;
}
static inline void chdf5_sb_u32(chdf5_sb_buf_t *b, uint32_t v) { chdf5_sb_put(b, &v, 4); }
static inline void chdf5_sb_u64(chdf5_sb_buf_t *b, uint64_t v) { chdf5_sb_put(b, &v, 8); }
static inline void chdf5_sb_bytes(chdf5_sb_buf_t *b, const void *p, size_t n) {
    chdf5_sb_u32(b, (uint32_t)n);
    chdf5_sb_put(b, p, n);
}
static inline void chdf5_sb_str(chdf5_sb_buf_t *b, const char *s) {
    size_t n = s ? strnlen(s, CHDF5_SB_STACK) : 0;
    chdf5_sb_bytes(b, s ? s : "", n);
}

static inline int chdf5_sb_write_all(int fd, const void *p, size_t n) {
    const uint8_t *q = (const uint8_t *)p;
    while (n > 0) {
        ssize_t w = write(fd, q, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

static inline int chdf5_sb_read_all(int fd, void *p, size_t n) {
    uint8_t *q = (uint8_t *)p;
    while (n > 0) {
        ssize_t r = read(fd, q, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        q += r;
        n -= (size_t)r;
    }
    return 0;
}

/// Sends `status` with the buffer as payload; a buffer that could not grow is sent as an error.
static inline void chdf5_sb_answer(int fd, uint32_t status, chdf5_sb_buf_t *b) {
    if (b->failed) {
        b->failed = 0;
        b->used = 0;
        static const char what[] = "the sandboxed reader ran out of memory building its answer";
        chdf5_sb_bytes(b, what, sizeof what - 1);
        chdf5_sb_bytes(b, "", 0);
        status = CHDF5_ANSWER_ERROR;
        if (b->failed) _exit(2);
    }
    uint32_t header[4] = { status, 0, (uint32_t)(b->used & 0xffffffffu), (uint32_t)((uint64_t)b->used >> 32) };
    if (chdf5_sb_write_all(fd, header, sizeof header) != 0 || chdf5_sb_write_all(fd, b->data, b->used) != 0) _exit(0);
    b->used = 0;
}

static inline void chdf5_sb_error(int fd, chdf5_sb_buf_t *b, const char *what) {
    char stack[CHDF5_SB_STACK];
    chdf5_error_stack_text(stack, sizeof stack);
    b->used = 0;
    chdf5_sb_str(b, what);
    chdf5_sb_str(b, stack);
    chdf5_sb_answer(fd, CHDF5_ANSWER_ERROR, b);
}

// MARK: Request cursor

typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
} chdf5_sb_cursor_t;

static inline uint64_t chdf5_sb_get64(chdf5_sb_cursor_t *c) {
    uint64_t v = 0;
    if (c->left < 8) { c->bad = 1; return 0; }
    memcpy(&v, c->p, 8);
    c->p += 8; c->left -= 8;
    return v;
}
static inline uint32_t chdf5_sb_get32(chdf5_sb_cursor_t *c) {
    uint32_t v = 0;
    if (c->left < 4) { c->bad = 1; return 0; }
    memcpy(&v, c->p, 4);
    c->p += 4; c->left -= 4;
    return v;
}
/// A string sent NUL-terminated (the length counts the NUL).
static inline const char *chdf5_sb_getstr(chdf5_sb_cursor_t *c) {
    uint32_t n = chdf5_sb_get32(c);
    if (c->bad || n == 0 || n > c->left || c->p[n - 1] != 0) { c->bad = 1; return ""; }
    const char *s = (const char *)c->p;
    c->p += n; c->left -= n;
    return s;
}

// MARK: Requests

static inline void chdf5_sb_members(int fd, chdf5_sb_buf_t *b, hid_t fid, const char *path, int creation_order,
                                    const chdf5_sb_limits_t *limits) {
    // Statuses: 16 = list (u32 tracked: 0 means the group does not track creation order and no
    // names follow; u64 count, then the names), 17 = too many members (u64 count),
    // 18 = names too long in total (u64 bytes).
    hid_t gid = H5Gopen2(fid, path, H5P_DEFAULT);
    if (gid < 0) { chdf5_sb_error(fd, b, "cannot open group"); return; }
    H5G_info_t info;
    if (H5Gget_info(gid, &info) < 0) { chdf5_sb_error(fd, b, "cannot read group info"); H5Gclose(gid); return; }
    if (info.nlinks > limits->max_group_members) {
        chdf5_sb_u64(b, info.nlinks);
        chdf5_sb_answer(fd, 17, b);
        H5Gclose(gid);
        return;
    }
    int tracked = 0;
    if (creation_order) {
        hid_t gcpl = H5Gget_create_plist(gid);
        if (gcpl >= 0) {
            unsigned flags = 0;
            if (H5Pget_link_creation_order(gcpl, &flags) >= 0) tracked = (flags & H5P_CRT_ORDER_TRACKED) != 0;
            H5Pclose(gcpl);
        }
        if (!tracked) {
            chdf5_sb_u32(b, 0);
            chdf5_sb_u64(b, 0);
            chdf5_sb_answer(fd, 16, b);
            H5Gclose(gid);
            return;
        }
    }
    H5_index_t index = tracked ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
    chdf5_sb_u32(b, 1);
    chdf5_sb_u64(b, info.nlinks);
    uint64_t total = 0;
    char *name = NULL;
    for (hsize_t i = 0; i < info.nlinks; i++) {
        ssize_t len = H5Lget_name_by_idx(gid, ".", index, H5_ITER_INC, i, NULL, 0, H5P_DEFAULT);
        char what[64];
        snprintf(what, sizeof what, "cannot read name of member %llu", (unsigned long long)i);
        if (len < 0 || len >= (1 << 16)) { free(name); chdf5_sb_error(fd, b, what); H5Gclose(gid); return; }
        free(name);
        name = (char *)malloc((size_t)len + 1);
        if (name == NULL || H5Lget_name_by_idx(gid, ".", index, H5_ITER_INC, i, name, (size_t)len + 1, H5P_DEFAULT) < 0) {
            free(name);
            chdf5_sb_error(fd, b, what);
            H5Gclose(gid);
            return;
        }
        total += (uint64_t)len + 4;
        if (total > limits->max_header_bytes) {
            free(name);
            b->used = 0;
            chdf5_sb_u64(b, total);
            chdf5_sb_answer(fd, 18, b);
            H5Gclose(gid);
            return;
        }
        chdf5_sb_bytes(b, name, strnlen(name, (size_t)len));
    }
    free(name);
    H5Gclose(gid);
    chdf5_sb_answer(fd, 16, b);
}

static inline void chdf5_sb_attribute(int fd, chdf5_sb_buf_t *b, hid_t loc, const char *object, const char *attribute,
                                      const chdf5_sb_limits_t *limits) {
    // Statuses: 16 absent; 17 too many elements (i64 points); 18 unsupported class (i32 class);
    // 19 variable-length strings (u32 scalar, u64 count, the strings); 20 strings too long in
    // total (u64 bytes so far); 21 fixed-length strings (u32 scalar, u64 count, u64 size,
    // u32 space-padded, count × size bytes); 22 fixed-length strings too large (u64 count,
    // u64 size); 23 numbers (u32 scalar, u64 count, count doubles); 24 numbers too large (u64 count).
    htri_t exists = H5Aexists_by_name(loc, object, attribute, H5P_DEFAULT);
    if (exists < 0) { chdf5_sb_error(fd, b, "cannot look up attribute"); return; }
    if (exists == 0) { chdf5_sb_answer(fd, 16, b); return; }
    hid_t aid = H5Aopen_by_name(loc, object, attribute, H5P_DEFAULT, H5P_DEFAULT);
    if (aid < 0) { chdf5_sb_error(fd, b, "cannot open attribute"); return; }
    hid_t tid = H5Aget_type(aid);
    if (tid < 0) { chdf5_sb_error(fd, b, "cannot read attribute type"); H5Aclose(aid); return; }
    hid_t sid = H5Aget_space(aid);
    if (sid < 0) { chdf5_sb_error(fd, b, "cannot read attribute dataspace"); H5Tclose(tid); H5Aclose(aid); return; }
    H5S_class_t space = H5Sget_simple_extent_type(sid);
    uint32_t scalar = space == H5S_SCALAR;
    hssize_t points = space == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(sid);
    H5T_class_t tclass = H5Tget_class(tid);
    if (points < 0 || (uint64_t)points > limits->max_attribute_elements) {
        chdf5_sb_u64(b, (uint64_t)points);
        chdf5_sb_answer(fd, 17, b);
    } else if (tclass == H5T_STRING) {
        uint64_t count = (uint64_t)points;
        htri_t variable = count == 0 ? 0 : H5Tis_variable_str(tid);
        size_t size = count == 0 ? 1 : H5Tget_size(tid);
        if (variable < 0) {
            chdf5_sb_error(fd, b, "cannot read string type");
        } else if (variable > 0) {
            hid_t mem = H5Tcopy(H5T_C_S1);
            char **values = NULL;
            if (mem < 0 || H5Tset_size(mem, H5T_VARIABLE) < 0 || H5Tset_cset(mem, H5Tget_cset(tid)) < 0) {
                chdf5_sb_error(fd, b, "cannot build string type");
            } else if ((values = (char **)calloc((size_t)count, sizeof(char *))) == NULL) {
                chdf5_sb_error(fd, b, "the sandboxed reader cannot allocate the string pointers");
            } else if (H5Aread(aid, mem, values) < 0) {
                chdf5_sb_error(fd, b, "cannot read string attribute");
            } else {
                chdf5_sb_u32(b, scalar);
                chdf5_sb_u64(b, count);
                uint64_t total = 0;
                int over = 0;
                for (uint64_t i = 0; i < count && !over; i++) {
                    size_t len = values[i] ? strlen(values[i]) : 0;
                    total += len;
                    if (total > limits->max_header_bytes) over = 1;
                    else chdf5_sb_bytes(b, values[i] ? values[i] : "", len);
                }
                (void)H5Dvlen_reclaim(mem, sid, H5P_DEFAULT, values);
                if (over) {
                    b->used = 0;
                    chdf5_sb_u64(b, total);
                    chdf5_sb_answer(fd, 20, b);
                } else {
                    chdf5_sb_answer(fd, 19, b);
                }
            }
            free(values);
            if (mem >= 0) H5Tclose(mem);
        } else if (size == 0 || (count > 0 && size > limits->max_header_bytes / count)) {
            chdf5_sb_u64(b, count);
            chdf5_sb_u64(b, size);
            chdf5_sb_answer(fd, 22, b);
        } else {
            size_t bytes = (size_t)count * size;
            uint8_t *buffer = (uint8_t *)malloc(bytes ? bytes : 1);
            if (buffer == NULL) {
                chdf5_sb_error(fd, b, "the sandboxed reader cannot allocate the attribute");
            } else if (bytes > 0 && H5Aread(aid, tid, buffer) < 0) {
                chdf5_sb_error(fd, b, "cannot read string attribute");
            } else {
                chdf5_sb_u32(b, scalar);
                chdf5_sb_u64(b, count);
                chdf5_sb_u64(b, size);
                chdf5_sb_u32(b, H5Tget_strpad(tid) == H5T_STR_SPACEPAD);
                chdf5_sb_put(b, buffer, bytes);
                chdf5_sb_answer(fd, 21, b);
            }
            free(buffer);
        }
    } else if (tclass == H5T_INTEGER || tclass == H5T_FLOAT) {
        uint64_t count = (uint64_t)points;
        if (count > limits->max_header_bytes / 8) {
            chdf5_sb_u64(b, count);
            chdf5_sb_answer(fd, 24, b);
        } else {
            double *values = (double *)malloc(count ? (size_t)count * 8 : 8);
            if (values == NULL) {
                chdf5_sb_error(fd, b, "the sandboxed reader cannot allocate the attribute");
            } else if (count > 0 && H5Aread(aid, H5T_NATIVE_DOUBLE, values) < 0) {
                chdf5_sb_error(fd, b, "cannot read numeric attribute");
            } else {
                chdf5_sb_u32(b, scalar);
                chdf5_sb_u64(b, count);
                chdf5_sb_put(b, values, (size_t)count * 8);
                chdf5_sb_answer(fd, 23, b);
            }
            free(values);
        }
    } else {
        chdf5_sb_u32(b, (uint32_t)tclass);
        chdf5_sb_answer(fd, 18, b);
    }
    H5Sclose(sid);
    H5Tclose(tid);
    H5Aclose(aid);
}

static inline void chdf5_sb_dataset_info(int fd, chdf5_sb_buf_t *b, hid_t loc, const char *name, int want_location) {
    // Answer (OK): i64 did (-1 when a step stopped), u32 step, i32 class, u64 size, u64 exponent
    // bits, u64 mantissa bits, i32 rank, u64 dims[rank], i32 filters, i32 f32le, i32 contiguous,
    // u64 address, u64 storage size, u32 external files, str stack.
    chdf5_dataset_info_t info;
    char stack[CHDF5_SB_STACK];
    hid_t did = chdf5_dataset_open_info(loc, name, want_location, &info, stack, sizeof stack);
    int rank = info.rank < 0 ? 0 : (info.rank > H5S_MAX_RANK ? H5S_MAX_RANK : info.rank);
    chdf5_sb_u64(b, (uint64_t)(int64_t)did);
    chdf5_sb_u32(b, (uint32_t)info.step);
    chdf5_sb_u32(b, (uint32_t)info.type_class);
    chdf5_sb_u64(b, info.type_size);
    chdf5_sb_u64(b, info.exponent_bits);
    chdf5_sb_u64(b, info.mantissa_bits);
    chdf5_sb_u32(b, (uint32_t)info.rank);
    for (int i = 0; i < rank; i++) chdf5_sb_u64(b, info.dims[i]);
    chdf5_sb_u32(b, (uint32_t)info.filters);
    chdf5_sb_u32(b, (uint32_t)info.is_ieee_f32le);
    chdf5_sb_u32(b, (uint32_t)info.contiguous);
    chdf5_sb_u64(b, info.address);
    chdf5_sb_u64(b, info.storage_size);
    // Values kept in other files (external storage) are refused by the parent before any read.
    int external = 0;
    if (did >= 0) {
        hid_t dcpl = H5Dget_create_plist(did);
        if (dcpl >= 0) { external = H5Pget_external_count(dcpl); H5Pclose(dcpl); }
    }
    chdf5_sb_u32(b, (uint32_t)(external > 0 ? external : 0));
    chdf5_sb_str(b, stack);
    chdf5_sb_answer(fd, CHDF5_ANSWER_OK, b);
}

static inline void chdf5_sb_dataset_read(int fd, chdf5_sb_buf_t *b, hid_t fid, hid_t did, const char *path, uint64_t count) {
    // Statuses: OK with count float32 values; 16 element count differs (u64 found);
    // 17 read failed (str stack, i64 missing filter id or -1, str filter name).
    if (did < 0) {
        did = H5Dopen2(fid, path, H5P_DEFAULT);
        if (did < 0) { chdf5_sb_error(fd, b, "cannot open dataset"); return; }
    }
    hid_t sid = H5Dget_space(did);
    if (sid < 0) { chdf5_sb_error(fd, b, "cannot read dataset dataspace"); H5Dclose(did); return; }
    hssize_t points = H5Sget_simple_extent_npoints(sid);
    H5Sclose(sid);
    if (points < 0 || (uint64_t)points != count) {
        chdf5_sb_u64(b, (uint64_t)points);
        chdf5_sb_answer(fd, 16, b);
        H5Dclose(did);
        return;
    }
    if (count > SIZE_MAX / 4) { chdf5_sb_error(fd, b, "dataset too large for this process"); H5Dclose(did); return; }
    float *values = (float *)malloc(count ? (size_t)count * 4 : 4);
    if (values == NULL) {
        chdf5_sb_error(fd, b, "the sandboxed reader cannot allocate the dataset (address-space limit)");
        H5Dclose(did);
        return;
    }
    if (count > 0 && H5Dread(did, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) < 0) {
        char stack[CHDF5_SB_STACK], label[64];
        chdf5_error_stack_text(stack, sizeof stack);
        long missing = chdf5_missing_filter(did, label, sizeof label);
        chdf5_sb_str(b, stack);
        chdf5_sb_u64(b, (uint64_t)(int64_t)missing);
        chdf5_sb_str(b, label);
        chdf5_sb_answer(fd, 17, b);
    } else {
        uint32_t header[4] = { CHDF5_ANSWER_OK, 0, (uint32_t)((count * 4) & 0xffffffffu), (uint32_t)((count * 4) >> 32) };
        if (chdf5_sb_write_all(fd, header, sizeof header) != 0 || chdf5_sb_write_all(fd, values, (size_t)count * 4) != 0) _exit(0);
    }
    free(values);
    H5Dclose(did);
}

// MARK: Seccomp

#if defined(__x86_64__)
#define CHDF5_SB_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define CHDF5_SB_ARCH AUDIT_ARCH_AARCH64
#endif

#ifndef SECCOMP_RET_KILL_PROCESS
#define SECCOMP_RET_KILL_PROCESS SECCOMP_RET_KILL
#endif

#define CHDF5_SB_LD_NR BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define CHDF5_SB_LD_ARG(i) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]))
#define CHDF5_SB_RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
#define CHDF5_SB_ALLOW_NR(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), CHDF5_SB_RET(SECCOMP_RET_ALLOW)
/// Allows `nr` when argument `arg` (low 32 bits) equals `value`; answers `otherwise` else.
#define CHDF5_SB_ALLOW_IF_EQ(nr, arg, value, otherwise) \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 4), CHDF5_SB_LD_ARG(arg), \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (value), 0, 1), CHDF5_SB_RET(SECCOMP_RET_ALLOW), \
    CHDF5_SB_RET(otherwise)
/// For `nr`: when argument `arg` has any of `bits`, answers `refused`, else `allowed`.
#define CHDF5_SB_UNLESS_BITS(nr, arg, bits, refused, allowed) \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 4), CHDF5_SB_LD_ARG(arg), \
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, (bits), 0, 1), CHDF5_SB_RET(refused), CHDF5_SB_RET(allowed)

#ifndef __O_TMPFILE
#define __O_TMPFILE 020000000
#endif
/// Open flags that would write or create: refused even while the input is being opened.
#define CHDF5_SB_WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | __O_TMPFILE)

/// Installs the reader's filter: `answer_fd` is the only descriptor written to; files may be
/// opened read-only while `may_open` is set (a second filter, `chdf5_sb_forbid_open`, ends that).
/// Returns 0, or -1 when the kernel refused (the child then exits before reading anything).
static inline int chdf5_sb_install_filter(int answer_fd, int may_open) {
#ifndef CHDF5_SB_ARCH
    (void)answer_fd; (void)may_open;
    errno = ENOSYS;
    return -1;
#else
    const uint32_t open_allowed = may_open ? SECCOMP_RET_ALLOW : (SECCOMP_RET_ERRNO | EPERM);
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, CHDF5_SB_ARCH, 1, 0),
        CHDF5_SB_RET(SECCOMP_RET_KILL_PROCESS),
        CHDF5_SB_LD_NR,
#if defined(__x86_64__)
        // x32 system calls reach the same table with this bit set.
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1), CHDF5_SB_RET(SECCOMP_RET_KILL_PROCESS),
#endif
        CHDF5_SB_ALLOW_NR(__NR_read),
        CHDF5_SB_ALLOW_NR(__NR_pread64),
        CHDF5_SB_ALLOW_NR(__NR_readv),
        CHDF5_SB_ALLOW_NR(__NR_lseek),
        CHDF5_SB_ALLOW_NR(__NR_fstat),
        CHDF5_SB_ALLOW_NR(__NR_newfstatat),
#ifdef __NR_statx
        CHDF5_SB_ALLOW_NR(__NR_statx),
#endif
#ifdef __NR_stat
        CHDF5_SB_ALLOW_NR(__NR_stat),
#endif
        CHDF5_SB_ALLOW_NR(__NR_flock),
        CHDF5_SB_ALLOW_NR(__NR_close),
        CHDF5_SB_ALLOW_NR(__NR_munmap),
        CHDF5_SB_ALLOW_NR(__NR_mremap),
        CHDF5_SB_ALLOW_NR(__NR_madvise),
        CHDF5_SB_ALLOW_NR(__NR_brk),
        CHDF5_SB_ALLOW_NR(__NR_futex),
        CHDF5_SB_ALLOW_NR(__NR_rt_sigreturn),
        CHDF5_SB_ALLOW_NR(__NR_rt_sigprocmask),
        CHDF5_SB_ALLOW_NR(__NR_clock_gettime),
        CHDF5_SB_ALLOW_NR(__NR_gettimeofday),
        CHDF5_SB_ALLOW_NR(__NR_getpid),
        CHDF5_SB_ALLOW_NR(__NR_gettid),
        CHDF5_SB_ALLOW_NR(__NR_exit),
        CHDF5_SB_ALLOW_NR(__NR_exit_group),
        // Only to add the second filter: a filter can only narrow what the first one allows.
        CHDF5_SB_ALLOW_NR(__NR_seccomp),
        CHDF5_SB_ALLOW_NR(__NR_getcwd),   // the core driver records the directory with the image's name
        // Writes go to the answer socket only. Others fail rather than kill the child, so that
        // glibc's report of a corrupted heap ends in its abort (SIGABRT, a crash) instead.
        CHDF5_SB_ALLOW_IF_EQ(__NR_write, 0, (uint32_t)answer_fd, SECCOMP_RET_ERRNO | EBADF),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_writev, 0, 1), CHDF5_SB_RET(SECCOMP_RET_ERRNO | EBADF),
        CHDF5_SB_UNLESS_BITS(__NR_mmap, 2, PROT_EXEC, SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ALLOW),
        CHDF5_SB_UNLESS_BITS(__NR_mprotect, 2, PROT_EXEC, SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_ALLOW),
        CHDF5_SB_UNLESS_BITS(__NR_openat, 2, CHDF5_SB_WRITE_FLAGS, SECCOMP_RET_ERRNO | EPERM, open_allowed),
#ifdef __NR_open
        CHDF5_SB_UNLESS_BITS(__NR_open, 1, CHDF5_SB_WRITE_FLAGS, SECCOMP_RET_ERRNO | EPERM, open_allowed),
#endif
        CHDF5_SB_RET(SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog program = { (unsigned short)(sizeof filter / sizeof filter[0]), filter };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program);
#endif
}

/// Adds a filter that refuses every open from now on (filters stack: both must allow a call).
static inline int chdf5_sb_forbid_open(void) {
    struct sock_filter filter[] = {
        CHDF5_SB_LD_NR,
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1), CHDF5_SB_RET(SECCOMP_RET_ERRNO | EPERM),
#ifdef __NR_open
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 0, 1), CHDF5_SB_RET(SECCOMP_RET_ERRNO | EPERM),
#endif
        CHDF5_SB_RET(SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = { (unsigned short)(sizeof filter / sizeof filter[0]), filter };
    return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program);
}

// MARK: Child

/// Current size of the address space, from /proc (read before the filter is installed).
static inline uint64_t chdf5_sb_address_space(void) {
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char text[128] = { 0 };
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return 0;
    return strtoull(text, NULL, 10) * (uint64_t)sysconf(_SC_PAGESIZE);
}

/// Prepares the child's limits and filter, opens the file, announces itself ready and serves
/// requests until the parent closes its end. With `walk_only` (the pre-flight), it walks all of
/// the file's metadata instead, announces that it finished, and exits: a file that crashes
/// libhdf5 is refused before it is used, and the child that serves the reader starts from a
/// libhdf5 that has not seen the damage yet, so errors read as libhdf5 reports them first.
/// Never returns.
static inline void chdf5_sb_child(int fd, const char *path, const void *image, size_t image_size, int walk_only,
                                  chdf5_sb_limits_t limits, uint64_t address_space_extra, uint64_t cpu_seconds) {
    // Let a crash end the child with its signal, whatever handlers the parent installed.
    int crashes[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS, SIGXCPU };
    for (size_t i = 0; i < sizeof crashes / sizeof crashes[0]; i++) signal(crashes[i], SIG_DFL);
    // The forking thread's mask is inherited; SIGXCPU (the CPU limit) must not be blocked.
    sigset_t unblocked;
    sigemptyset(&unblocked);
    (void)sigprocmask(SIG_SETMASK, &unblocked, NULL);
    // No PR_SET_PDEATHSIG: it fires when the forking *thread* ends, and pool threads come and go
    // while the file is still being read. A dead parent closes its end of the socket instead,
    // which ends the child at its next read.
    // Only the answer socket stays open: the parent's outputs and inputs are not the child's.
    int closed = -1;
#ifdef __NR_close_range
    closed = (fd == 0 || syscall(__NR_close_range, 0u, (unsigned)fd - 1, 0u) == 0) ? (int)syscall(__NR_close_range, (unsigned)fd + 1, ~0u, 0u) : -1;
#endif
    if (closed != 0) {
        long most = sysconf(_SC_OPEN_MAX);
        if (most < 0 || most > (1 << 20)) most = 1 << 20;
        for (int other = 0; other < (int)most; other++) if (other != fd) (void)close(other);
    }
    struct rlimit none = { 0, 0 };
    (void)setrlimit(RLIMIT_CORE, &none);
    // A child whose memory or CPU cannot be bounded does not read the file (3: cannot confine).
    uint64_t base = chdf5_sb_address_space();
    if (address_space_extra > 0) {
        if (base == 0) _exit(3);
        struct rlimit as = { (rlim_t)(base + address_space_extra), (rlim_t)(base + address_space_extra) };
        if (setrlimit(RLIMIT_AS, &as) != 0) _exit(3);
    }
    if (cpu_seconds > 0) {
        struct rlimit cpu = { (rlim_t)cpu_seconds, (rlim_t)cpu_seconds + 2 };
        if (setrlimit(RLIMIT_CPU, &cpu) != 0) _exit(3);
    }
    if (chdf5_sb_install_filter(fd, image == NULL) != 0) _exit(3);
    (void)H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    chdf5_refuse_external_links();
    chdf5_refuse_filter_plugins();
    chdf5_sb_buf_t b = { NULL, 0, 0, 0 };
    hid_t fapl = H5P_DEFAULT;
    if (image != NULL) {
        fapl = H5Pcreate(H5P_FILE_ACCESS);
        if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 16, 0) < 0 || H5Pset_file_image(fapl, (void *)image, image_size) < 0) {
            chdf5_sb_error(fd, &b, "cannot prepare the file image");
            _exit(0);
        }
    }
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (fid < 0) {
        chdf5_sb_error(fd, &b, "cannot open");
        _exit(0);
    }
    if (fapl != H5P_DEFAULT) H5Pclose(fapl);
    if (chdf5_sb_forbid_open() != 0) _exit(3);
    if (walk_only) {
        hid_t root = H5Oopen(fid, "/", H5P_DEFAULT);
        if (root >= 0) {
            chdf5_walk_t walk = { 0, 0, NULL, 0, (hsize_t)limits.max_header_bytes };
            chdf5_walk_object(root, &walk);
            free(walk.seen);
            H5Oclose(root);
        }
        chdf5_sb_answer(fd, CHDF5_ANSWER_OK, &b);
        _exit(0);
    }
    chdf5_sb_answer(fd, CHDF5_ANSWER_OK, &b);
    for (;;) {
        uint64_t header[2];
        if (chdf5_sb_read_all(fd, header, sizeof header) != 0) _exit(0);
        uint32_t op = (uint32_t)(header[0] & 0xffffffffu);
        uint64_t length = header[1];
        if (length > CHDF5_SB_MAX_REQUEST) _exit(4);
        uint8_t *request = (uint8_t *)malloc(length ? (size_t)length : 1);
        if (request == NULL || chdf5_sb_read_all(fd, request, (size_t)length) != 0) _exit(0);
        chdf5_sb_cursor_t c = { request, (size_t)length, 0 };
        b.used = 0;
        b.failed = 0;
        switch (op) {
        case CHDF5_OP_KIND: {
            hid_t loc = (hid_t)chdf5_sb_get64(&c);
            const char *name = chdf5_sb_getstr(&c);
            if (c.bad) _exit(4);
            chdf5_link_kind_t kind = chdf5_link_kind(loc == 0 ? fid : loc, name);
            char stack[CHDF5_SB_STACK];
            stack[0] = 0;
            if ((int)kind < 0) chdf5_error_stack_text(stack, sizeof stack);
            chdf5_sb_u32(&b, (uint32_t)(int32_t)kind);
            chdf5_sb_str(&b, stack);
            chdf5_sb_answer(fd, CHDF5_ANSWER_OK, &b);
            break;
        }
        case CHDF5_OP_GROUP_OPEN: {
            hid_t loc = (hid_t)chdf5_sb_get64(&c);
            const char *name = chdf5_sb_getstr(&c);
            if (c.bad) _exit(4);
            hid_t gid = H5Gopen2(loc == 0 ? fid : loc, name, H5P_DEFAULT);
            char stack[CHDF5_SB_STACK];
            stack[0] = 0;
            if (gid < 0) chdf5_error_stack_text(stack, sizeof stack);
            chdf5_sb_u64(&b, (uint64_t)(int64_t)gid);
            chdf5_sb_str(&b, stack);
            chdf5_sb_answer(fd, CHDF5_ANSWER_OK, &b);
            break;
        }
        case CHDF5_OP_CLOSE: {
            hid_t id = (hid_t)chdf5_sb_get64(&c);
            if (c.bad) _exit(4);
            H5I_type_t type = H5Iget_type(id);
            if (type == H5I_GROUP) H5Gclose(id);
            else if (type == H5I_DATASET) H5Dclose(id);
            break;
        }
        case CHDF5_OP_MEMBERS: {
            const char *path = chdf5_sb_getstr(&c);
            uint32_t order = chdf5_sb_get32(&c);
            if (c.bad) _exit(4);
            chdf5_sb_members(fd, &b, fid, path, order != 0, &limits);
            break;
        }
        case CHDF5_OP_ATTRIBUTE: {
            hid_t loc = (hid_t)chdf5_sb_get64(&c);
            const char *object = chdf5_sb_getstr(&c);
            const char *attribute = chdf5_sb_getstr(&c);
            if (c.bad) _exit(4);
            chdf5_sb_attribute(fd, &b, loc == 0 ? fid : loc, object, attribute, &limits);
            break;
        }
        case CHDF5_OP_DATASET_INFO: {
            hid_t loc = (hid_t)chdf5_sb_get64(&c);
            const char *name = chdf5_sb_getstr(&c);
            uint32_t want = chdf5_sb_get32(&c);
            if (c.bad) _exit(4);
            chdf5_sb_dataset_info(fd, &b, loc == 0 ? fid : loc, name, want != 0);
            break;
        }
        case CHDF5_OP_DATASET_READ: {
            hid_t did = (hid_t)chdf5_sb_get64(&c);
            const char *path = chdf5_sb_getstr(&c);
            uint64_t count = chdf5_sb_get64(&c);
            if (c.bad) _exit(4);
            chdf5_sb_dataset_read(fd, &b, fid, did, path, count);
            break;
        }
        default:
            _exit(4);
        }
        (void)H5Eclear2(H5E_DEFAULT);
        free(request);
    }
}

// MARK: Parent

/// A running reader child: its process id and the parent's end of the socket pair.
typedef struct {
    int pid;
    int fd;
    /// errno when the child could not be started (then `pid` is -1).
    int error;
} chdf5_sandbox_t;

/// Starts a reader child for the file at `path` (or the in-memory `image`); see `chdf5_sb_child`. Call with the libhdf5
/// lock held and no other library call under way that the child could inherit half-done.
static inline chdf5_sandbox_t chdf5_sandbox_start(const char *path, const void *image, size_t image_size, int walk_only,
                                                  chdf5_sb_limits_t limits, uint64_t address_space_extra,
                                                  uint64_t cpu_seconds) {
    chdf5_sandbox_t result = { -1, -1, 0 };
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) { result.error = errno; return result; }
    pid_t pid = fork();
    if (pid < 0) { result.error = errno; close(fds[0]); close(fds[1]); return result; }
    if (pid == 0) {
        chdf5_sb_child(fds[1], path, image, image_size, walk_only, limits, address_space_extra, cpu_seconds);
        _exit(0);
    }
    close(fds[1]);
    result.pid = pid;
    result.fd = fds[0];
    return result;
}

/// Sends `n` bytes; 0, or errno (EPIPE when the child is gone; never raises SIGPIPE).
static inline int chdf5_sandbox_send(int fd, const void *p, size_t n) {
    const uint8_t *q = (const uint8_t *)p;
    while (n > 0) {
        ssize_t w = send(fd, q, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return errno;
        q += w;
        n -= (size_t)w;
    }
    return 0;
}

/// Receives exactly `n` bytes, waiting at most until `deadline_ms` (CLOCK_MONOTONIC milliseconds).
/// 0 done, -1 end of stream (the child is gone), -2 deadline passed, else errno.
static inline int chdf5_sandbox_receive(int fd, void *p, size_t n, int64_t deadline_ms) {
    uint8_t *q = (uint8_t *)p;
    while (n > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        int64_t left = deadline_ms - ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        if (left <= 0) return -2;
        struct pollfd pfd = { fd, POLLIN, 0 };
        int r = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errno;
        if (r == 0) continue;
        ssize_t got = recv(fd, q, n, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (got < 0) return errno;
        if (got == 0) return -1;
        q += got;
        n -= (size_t)got;
    }
    return 0;
}

/// Milliseconds on CLOCK_MONOTONIC.
static inline int64_t chdf5_monotonic_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/// How a child ended: `signal` when killed by one, else its exit `code`.
typedef struct {
    int signal;
    int code;
} chdf5_sandbox_end_t;

/// Closes the parent's end, optionally kills the child, and reaps it.
static inline chdf5_sandbox_end_t chdf5_sandbox_finish(chdf5_sandbox_t child, int kill_it) {
    chdf5_sandbox_end_t end = { 0, 0 };
    if (child.fd >= 0) close(child.fd);
    if (child.pid <= 0) return end;
    if (kill_it) kill(child.pid, SIGKILL);
    int status = 0;
    while (waitpid(child.pid, &status, 0) < 0) {
        if (errno != EINTR) return end;
    }
    if (WIFSIGNALED(status)) end.signal = WTERMSIG(status);
    else if (WIFEXITED(status)) end.code = WEXITSTATUS(status);
    return end;
}

/// Test support: forks a child that installs the reader's filter (after opening nothing) and then
/// tries one forbidden thing: 1 execve of /bin/true, 2 opening `path` for writing (creating it),
/// 3 creating a socket, 4 writing to stderr (refused with an error), 5 an executable mapping,
/// 0 nothing but a write to its own socket. Returns how
/// the child ended: the signal that killed it, or 1000 + its exit code (exit 0: the forbidden call
/// failed with an error; exit 1: it succeeded).
static inline int chdf5_sandbox_selftest(int what, const char *path) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return -1;
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int crashes[] = { SIGSEGV, SIGSYS };
        for (size_t i = 0; i < sizeof crashes / sizeof crashes[0]; i++) signal(crashes[i], SIG_DFL);
        struct rlimit none = { 0, 0 };
        (void)setrlimit(RLIMIT_CORE, &none);
        if (chdf5_sb_install_filter(fds[1], 0) != 0) _exit(3);
        int ok = 0;
        switch (what) {
        case 1: { char *argv[] = { (char *)"true", NULL }; char *envp[] = { NULL }; ok = execve("/bin/true", argv, envp) == 0; break; }
        case 2: { int f = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600); ok = f >= 0; break; }
        case 3: ok = socket(AF_INET, SOCK_STREAM, 0) >= 0; break;
        case 4: ok = write(2, "x", 1) == 1; break;
        case 5: ok = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) != MAP_FAILED; break;
        default: ok = write(fds[1], "k", 1) != 1; break;   // allowed: exit 0
        }
        _exit(ok ? 1 : 0);
    }
    close(fds[1]);
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) if (errno != EINTR) return -1;
    if (WIFSIGNALED(status)) return WTERMSIG(status);
    return 1000 + (WIFEXITED(status) ? WEXITSTATUS(status) : 0);
}

#endif
