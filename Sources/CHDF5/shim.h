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

#endif
