#ifndef RESNETKIT_CHDF5_SHIM_H
#define RESNETKIT_CHDF5_SHIM_H

// libhdf5 boundary. Swift cannot import the HDF5 macros that expand to comma expressions
// (`(H5OPEN H5T_NATIVE_FLOAT_g)`), so each one used from Swift is reached through a
// `static inline` function here. Only Sources/ResNetKit/Keras/HDF5.swift imports this module.

#include <hdf5.h>
#include <string.h>
#include <stdio.h>

static inline hid_t chdf5_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t chdf5_native_double(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t chdf5_c_s1(void) { return H5T_C_S1; }
static inline hid_t chdf5_file_access_class(void) { return H5P_FILE_ACCESS; }
static inline hid_t chdf5_default(void) { return H5P_DEFAULT; }
static inline unsigned chdf5_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline size_t chdf5_variable(void) { return H5T_VARIABLE; }
static inline hid_t chdf5_error_default(void) { return H5E_DEFAULT; }
static inline hid_t chdf5_s_all(void) { return H5S_ALL; }
static inline unsigned chdf5_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline hid_t chdf5_ieee_f32le(void) { return H5T_IEEE_F32LE; }

/// Turns off libhdf5's automatic printing of error stacks to stderr; the Swift side reads the
/// stack itself and puts it into the thrown error.
static inline void chdf5_silence_errors(void) { (void)H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/// Takes the external-link class out of libhdf5's registry, so that no lookup in any file can
/// open another file on disk through a link (a crafted weights file could otherwise make libhdf5
/// read a file of the attacker's choosing, outside every check we make). Process-wide and idempotent.
static inline void chdf5_refuse_external_links(void) {
    if (H5Lis_registered(H5L_TYPE_EXTERNAL) > 0) (void)H5Lunregister(H5L_TYPE_EXTERNAL);
}

/// Turns off libhdf5's loading of filter plugins: without it, reading a dataset whose filter
/// pipeline names a filter libhdf5 lacks (chosen by the file) makes libhdf5 search its plugin
/// directories (or HDF5_PLUGIN_PATH) and dlopen every shared library there until one provides
/// the filter. A weights reader runs no code a file asks for; such datasets are refused by name
/// instead (`chdf5_missing_filter`). Process-wide and idempotent.
static inline void chdf5_refuse_filter_plugins(void) { (void)H5PLset_loading_state(0); }

/// The first filter in the dataset's pipeline that libhdf5 cannot run (neither built in nor
/// registered), with the name the file gives it copied into `name` (NUL-terminated, possibly
/// empty); -1 when every filter is available or the pipeline cannot be read.
static inline long chdf5_missing_filter(hid_t did, char *name, size_t capacity) {
    if (name != NULL && capacity > 0) name[0] = 0;
    hid_t dcpl = H5Dget_create_plist(did);
    if (dcpl < 0) return -1;
    long missing = -1;
    int count = H5Pget_nfilters(dcpl);
    for (int k = 0; k < count && missing < 0; k++) {
        unsigned flags = 0, config = 0;
        size_t values = 0;   // the client data values are not wanted
        H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)k, &flags, &values, NULL, capacity, name, &config);
        if (id >= 0 && H5Zfilter_avail(id) <= 0) missing = (long)id;
        else if (name != NULL && capacity > 0) name[0] = 0;
    }
    H5Pclose(dcpl);
    if (name != NULL && capacity > 0) name[capacity - 1] = 0;
    return missing;
}

/// The type of the link `name` in `loc` without following it: 0 hard, 1 soft, 2 external or any
/// other (user-defined) class, -1 when the link cannot be read.
static inline int chdf5_link_class(hid_t loc, const char *name) {
    H5L_info_t info;
    if (H5Lget_info(loc, name, &info, H5P_DEFAULT) < 0) return -1;
    if (info.type == H5L_TYPE_HARD) return 0;
    if (info.type == H5L_TYPE_SOFT) return 1;
    return 2;
}

typedef struct {
    char *buffer;
    size_t capacity;
    size_t used;
} chdf5_error_text_t;

static inline herr_t chdf5_error_walker(unsigned n, const H5E_error2_t *err, void *client) {
    chdf5_error_text_t *text = (chdf5_error_text_t *)client;
    if (text->used + 1 >= text->capacity) return 0;
    const char *desc = (err->desc != NULL) ? err->desc : "";
    const char *func = (err->func_name != NULL) ? err->func_name : "?";
    int written = snprintf(text->buffer + text->used, text->capacity - text->used,
                           "%s%s(): %s", n == 0 ? "" : "; ", func, desc);
    if (written > 0) {
        size_t w = (size_t)written;
        text->used += (w < text->capacity - text->used) ? w : (text->capacity - text->used - 1);
    }
    return 0;
}

/// Writes the current thread's HDF5 error stack, innermost first, into `buffer` as one line.
static inline void chdf5_error_stack_text(char *buffer, size_t capacity) {
    if (buffer == NULL || capacity == 0) return;
    buffer[0] = 0;
    chdf5_error_text_t text = { buffer, capacity, 0 };
    (void)H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, chdf5_error_walker, &text);
    buffer[capacity - 1] = 0;
}

// MARK: - Lookups in one call
//
// The Keras reader looks at a few thousand links and datasets. Each libhdf5 call walks its path
// from the location again and takes the Swift side's lock, so the usual sequence of calls for one
// link or one dataset is made here in one go. Each function stops at the first failure, with
// libhdf5's error stack still describing it (no further API call is made before returning), so
// the caller reports exactly what it would have reported making the calls one by one.

/// What `chdf5_link_kind` found at a path.
typedef enum {
    /// `H5Lexists` failed (error stack set).
    CHDF5_LINK_LOOKUP_FAILED = -1,
    /// The link exists but its object header cannot be read (error stack set).
    CHDF5_LINK_HEADER_FAILED = -2,
    CHDF5_LINK_MISSING = 0,
    CHDF5_LINK_GROUP = 1,
    CHDF5_LINK_DATASET = 2,
    CHDF5_LINK_OTHER = 3,
    /// An external or user-defined link, which is never followed.
    CHDF5_LINK_EXTERNAL = 4
} chdf5_link_kind_t;

/// The kind of the object the last component of `name` (relative to `loc`) links to: the link is
/// looked up without following it (external links are reported, not followed), then the object
/// header is read. Intermediate components are the caller's to check.
static inline chdf5_link_kind_t chdf5_link_kind(hid_t loc, const char *name) {
    H5L_info_t linfo;
    // The link's own info answers "does it exist" in the usual case; only when it cannot be read
    // does H5Lexists tell a missing link from a damaged one.
    if (H5Lget_info(loc, name, &linfo, H5P_DEFAULT) < 0) {
        htri_t exists = H5Lexists(loc, name, H5P_DEFAULT);
        if (exists < 0) return CHDF5_LINK_LOOKUP_FAILED;
        if (exists == 0) return CHDF5_LINK_MISSING;
    } else if (linfo.type != H5L_TYPE_HARD && linfo.type != H5L_TYPE_SOFT) {
        return CHDF5_LINK_EXTERNAL;
    }
    H5O_info_t oinfo;
    if (H5Oget_info_by_name2(loc, name, &oinfo, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return CHDF5_LINK_HEADER_FAILED;
    if (oinfo.type == H5O_TYPE_GROUP) return CHDF5_LINK_GROUP;
    if (oinfo.type == H5O_TYPE_DATASET) return CHDF5_LINK_DATASET;
    return CHDF5_LINK_OTHER;
}

/// How far `chdf5_dataset_open_info` got; each value names the call that failed (error stack set),
/// except `CHDF5_DS_STOPPED_TYPE`, where the element type is one the reader refuses anyway.
typedef enum {
    CHDF5_DS_DONE = 0,
    CHDF5_DS_FAILED_OPEN,
    CHDF5_DS_FAILED_TYPE,
    CHDF5_DS_FAILED_FIELDS,
    CHDF5_DS_STOPPED_TYPE,
    CHDF5_DS_FAILED_SPACE,
    CHDF5_DS_STOPPED_NULL_SPACE,
    CHDF5_DS_FAILED_RANK,
    CHDF5_DS_FAILED_DIMS,
    CHDF5_DS_FAILED_PLIST,
    CHDF5_DS_FAILED_FILTERS
} chdf5_dataset_step_t;

/// What the reader needs to know about a dataset before reading (or deferring) its values.
typedef struct {
    chdf5_dataset_step_t step;
    H5T_class_t type_class;
    size_t type_size;
    /// Exponent and mantissa bits, for 2-byte floats only.
    size_t exponent_bits, mantissa_bits;
    int rank;
    hsize_t dims[H5S_MAX_RANK];
    int filters;
    /// Set only when `want_location` was given and the dataset is an unfiltered 4-byte float.
    int is_ieee_f32le;
    int contiguous;
    haddr_t address;
    hsize_t storage_size;
} chdf5_dataset_info_t;

/// Opens the dataset `name` (relative to `loc`) and reads its element type, dataspace and filter
/// count, in the order the reader checks them, stopping at the first failure or refused type. With
/// `want_location`, an unfiltered 4-byte float dataset also gets its layout, file address and
/// storage size (what reading it by offset needs). Returns the open dataset (the caller closes it)
/// when every step succeeded; otherwise closes what it opened and returns a negative value, with
/// `info->step` saying where it stopped and, for a failed call, libhdf5's error stack in `error`.
static inline hid_t chdf5_dataset_open_info(hid_t loc, const char *name, int want_location, chdf5_dataset_info_t *info,
                                            char *error, size_t error_capacity) {
    memset(info, 0, sizeof *info);
    info->address = HADDR_UNDEF;
    if (error != NULL && error_capacity > 0) error[0] = 0;
    hid_t did = -1, tid = -1, sid = -1, dcpl = -1;
    chdf5_dataset_step_t step = CHDF5_DS_DONE;
    int f32le = 0;
    do {
        did = H5Dopen2(loc, name, H5P_DEFAULT);
        if (did < 0) { step = CHDF5_DS_FAILED_OPEN; break; }
        tid = H5Dget_type(did);
        if (tid < 0) { step = CHDF5_DS_FAILED_TYPE; break; }
        info->type_class = H5Tget_class(tid);
        info->type_size = H5Tget_size(tid);
        int accepted = info->type_class == H5T_FLOAT && (info->type_size == 4 || info->type_size == 8);
        if (info->type_class == H5T_FLOAT && info->type_size == 2) {
            size_t spos, epos, mpos;
            if (H5Tget_fields(tid, &spos, &epos, &info->exponent_bits, &mpos, &info->mantissa_bits) < 0) {
                step = CHDF5_DS_FAILED_FIELDS;
                break;
            }
            accepted = (info->exponent_bits == 5 && info->mantissa_bits == 10) || (info->exponent_bits == 8 && info->mantissa_bits == 7);
        }
        if (!accepted) { step = CHDF5_DS_STOPPED_TYPE; break; }
        f32le = want_location && info->type_size == 4 && H5Tequal(tid, H5T_IEEE_F32LE) > 0;
        sid = H5Dget_space(did);
        if (sid < 0) { step = CHDF5_DS_FAILED_SPACE; break; }
        if (H5Sget_simple_extent_type(sid) == H5S_NULL) { step = CHDF5_DS_STOPPED_NULL_SPACE; break; }
        info->rank = H5Sget_simple_extent_ndims(sid);
        if (info->rank < 0 || info->rank > H5S_MAX_RANK) { step = CHDF5_DS_FAILED_RANK; break; }
        if (info->rank > 0 && H5Sget_simple_extent_dims(sid, info->dims, NULL) != info->rank) { step = CHDF5_DS_FAILED_DIMS; break; }
        dcpl = H5Dget_create_plist(did);
        if (dcpl < 0) { step = CHDF5_DS_FAILED_PLIST; break; }
        info->filters = H5Pget_nfilters(dcpl);
        if (info->filters < 0) { step = CHDF5_DS_FAILED_FILTERS; break; }
        if (f32le && info->filters == 0) {
            info->is_ieee_f32le = 1;
            info->contiguous = H5Pget_layout(dcpl) == H5D_CONTIGUOUS;
            if (info->contiguous) {
                info->address = H5Dget_offset(did);   // HADDR_UNDEF when not allocated
                info->storage_size = H5Dget_storage_size(did);
            }
        }
    } while (0);
    // The error stack is taken before any cleanup call, which would clear it.
    if (step != CHDF5_DS_DONE && step != CHDF5_DS_STOPPED_TYPE && step != CHDF5_DS_STOPPED_NULL_SPACE) {
        chdf5_error_stack_text(error, error_capacity);
    }
    if (dcpl >= 0) H5Pclose(dcpl);
    if (sid >= 0) H5Sclose(sid);
    if (tid >= 0) H5Tclose(tid);
    info->step = step;
    if (step != CHDF5_DS_DONE) {
        if (did >= 0) H5Dclose(did);
        return -1;
    }
    return did;
}

// MARK: - Pre-flight walk in a child process
//
// libhdf5 is not hardened against crafted files: a damaged heap or object header can make it
// crash (SIGSEGV) or loop instead of returning an error. Before the reader child (sandbox.h)
// serves a file, a first child opens it the same way and touches every piece of metadata the
// Keras reader will touch (`chdf5_walk_object`); the parent only looks at how that child ended.

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/// Bounds the child keeps to, so that a damaged count cannot make the check itself run or
/// allocate without limit (attribute sizes are bounded by the caller's `max_attribute_bytes`,
/// the limit the reader refuses larger ones with).
#define CHDF5_PREFLIGHT_MAX_OBJECTS 4000000
#define CHDF5_PREFLIGHT_MAX_DEPTH 256


/// Walk state: object-header addresses already visited (open addressing), so that an object
/// reached by several hard links, or a hard-link cycle, is walked once.
typedef struct {
    long objects;
    int depth;
    haddr_t *seen;
    size_t capacity;
    hsize_t max_attribute_bytes;
} chdf5_walk_t;

/// Slot of `addr` in a table of `capacity` (a power of two). Object headers sit at aligned
/// addresses, so the product's high bits are folded into the low ones the mask keeps.
static inline size_t chdf5_walk_slot(haddr_t addr, size_t capacity) {
    uint64_t h = (uint64_t)addr * 0x9E3779B97F4A7C15ull;
    return (size_t)(h ^ (h >> 29) ^ (h >> 47)) & (capacity - 1);
}

/// Records `addr`; returns 1 when it was new, 0 when already seen or when memory ran out.
static inline int chdf5_walk_first_visit(chdf5_walk_t *walk, haddr_t addr) {
    if ((size_t)walk->objects * 2 >= walk->capacity) {
        size_t capacity = walk->capacity == 0 ? 1024 : walk->capacity * 2;
        haddr_t *seen = (haddr_t *)malloc(capacity * sizeof(haddr_t));
        if (seen == NULL) return 0;
        for (size_t i = 0; i < capacity; i++) seen[i] = HADDR_UNDEF;
        for (size_t i = 0; i < walk->capacity; i++) {
            if (walk->seen[i] == HADDR_UNDEF) continue;
            size_t j = chdf5_walk_slot(walk->seen[i], capacity);
            while (seen[j] != HADDR_UNDEF) j = (j + 1) & (capacity - 1);
            seen[j] = walk->seen[i];
        }
        free(walk->seen);
        walk->seen = seen;
        walk->capacity = capacity;
    }
    size_t j = chdf5_walk_slot(addr, walk->capacity);
    while (walk->seen[j] != HADDR_UNDEF) {
        if (walk->seen[j] == addr) return 0;
        j = (j + 1) & (walk->capacity - 1);
    }
    walk->seen[j] = addr;
    walk->objects++;
    return 1;
}

static inline herr_t chdf5_walk_attribute(hid_t loc, const char *name, const H5A_info_t *ainfo, void *data) {
    (void)ainfo;
    hsize_t max_bytes = ((chdf5_walk_t *)data)->max_attribute_bytes;
    hid_t aid = H5Aopen(loc, name, H5P_DEFAULT);
    if (aid < 0) return 0;
    hid_t tid = H5Aget_type(aid);
    hid_t sid = H5Aget_space(aid);
    if (tid >= 0 && sid >= 0) {
        H5S_class_t sclass = H5Sget_simple_extent_type(sid);
        hssize_t points = sclass == H5S_NULL ? 0 : H5Sget_simple_extent_npoints(sid);
        H5T_class_t tclass = H5Tget_class(tid);
        // Read the value the way the Swift reader does: variable-length strings through the
        // global heap (where the known libhdf5 crash is), numbers converted to double, fixed
        // strings as stored.
        if (points > 0) {
            if (tclass == H5T_STRING && H5Tis_variable_str(tid) > 0) {
                if ((hsize_t)points <= max_bytes / sizeof(char *)) {
                    char **values = (char **)calloc((size_t)points, sizeof(char *));
                    hid_t mem = H5Tcopy(H5T_C_S1);
                    if (values != NULL && mem >= 0 && H5Tset_size(mem, H5T_VARIABLE) >= 0 &&
                        H5Tset_cset(mem, H5Tget_cset(tid)) >= 0 && H5Aread(aid, mem, values) >= 0) {
                        for (hssize_t i = 0; i < points; i++) if (values[i] != NULL) (void)strlen(values[i]);
                        (void)H5Dvlen_reclaim(mem, sid, H5P_DEFAULT, values);
                    }
                    if (mem >= 0) H5Tclose(mem);
                    free(values);
                }
            } else if (tclass == H5T_STRING || tclass == H5T_INTEGER || tclass == H5T_FLOAT) {
                size_t size = tclass == H5T_STRING ? H5Tget_size(tid) : sizeof(double);
                if (size > 0 && (hsize_t)points <= max_bytes / size) {
                    void *buffer = malloc((size_t)points * size);
                    if (buffer != NULL) {
                        (void)H5Aread(aid, tclass == H5T_STRING ? tid : H5T_NATIVE_DOUBLE, buffer);
                        free(buffer);
                    }
                }
            }
        }
    }
    if (sid >= 0) H5Sclose(sid);
    if (tid >= 0) H5Tclose(tid);
    H5Aclose(aid);
    return 0;
}

static inline herr_t chdf5_walk_link(hid_t group, const char *name, const H5L_info_t *linfo, void *data);

/// Everything about one object the reader may look at: its header, attributes, and for a group
/// its links in both indexes, for a dataset its type, dataspace, filters and chunk index.
static inline void chdf5_walk_object(hid_t oid, chdf5_walk_t *walk) {
    H5O_info_t info;
    if (H5Oget_info2(oid, &info, H5O_INFO_BASIC | H5O_INFO_NUM_ATTRS) < 0) return;
    if (walk->objects > CHDF5_PREFLIGHT_MAX_OBJECTS || !chdf5_walk_first_visit(walk, info.addr)) return;
    hsize_t idx = 0;
    (void)H5Aiterate2(oid, H5_INDEX_NAME, H5_ITER_INC, &idx, chdf5_walk_attribute, walk);
    if (info.type == H5O_TYPE_GROUP) {
        H5G_info_t ginfo;
        (void)H5Gget_info(oid, &ginfo);
        hid_t gcpl = H5Gget_create_plist(oid);
        if (gcpl >= 0) {
            unsigned flags = 0;
            if (H5Pget_link_creation_order(gcpl, &flags) >= 0 && (flags & H5P_CRT_ORDER_TRACKED)) {
                // The creation-order index is a separate structure; the reader lists members by it.
                for (hsize_t k = 0; k < ginfo.nlinks && k < (hsize_t)CHDF5_PREFLIGHT_MAX_OBJECTS; k++) {
                    char small[8];
                    (void)H5Lget_name_by_idx(oid, ".", H5_INDEX_CRT_ORDER, H5_ITER_INC, k, small, sizeof small, H5P_DEFAULT);
                }
            }
            H5Pclose(gcpl);
        }
        hsize_t li = 0;
        if (walk->depth < CHDF5_PREFLIGHT_MAX_DEPTH) {
            walk->depth++;
            (void)H5Literate(oid, H5_INDEX_NAME, H5_ITER_INC, &li, chdf5_walk_link, walk);
            walk->depth--;
        }
    } else if (info.type == H5O_TYPE_DATASET) {
        hid_t tid = H5Dget_type(oid);
        if (tid >= 0) {
            size_t spos, epos, esize, mpos, msize;
            if (H5Tget_class(tid) == H5T_FLOAT) (void)H5Tget_fields(tid, &spos, &epos, &esize, &mpos, &msize);
            (void)H5Tget_size(tid);
            H5Tclose(tid);
        }
        hid_t sid = H5Dget_space(oid);
        if (sid >= 0) {
            hsize_t dims[H5S_MAX_RANK];
            int rank = H5Sget_simple_extent_ndims(sid);
            if (rank >= 0 && rank <= H5S_MAX_RANK) (void)H5Sget_simple_extent_dims(sid, dims, NULL);
            H5Sclose(sid);
        }
        hid_t dcpl = H5Dget_create_plist(oid);
        if (dcpl >= 0) { (void)H5Pget_nfilters(dcpl); H5Pclose(dcpl); }
        // Walks the chunk index (B-tree) of a chunked dataset without reading the chunks.
        (void)H5Dget_storage_size(oid);
        (void)H5Dget_offset(oid);
    }
}

static inline herr_t chdf5_walk_link(hid_t group, const char *name, const H5L_info_t *linfo, void *data) {
    chdf5_walk_t *walk = (chdf5_walk_t *)data;
    if (walk->objects > CHDF5_PREFLIGHT_MAX_OBJECTS) return 1;
    if (linfo->type != H5L_TYPE_HARD) return 0;  // soft/external links: the reader never follows them
    hid_t oid = H5Oopen(group, name, H5P_DEFAULT);
    if (oid < 0) return 0;
    chdf5_walk_object(oid, walk);
    H5Oclose(oid);
    return 0;
}

#include "sandbox.h"

#endif
