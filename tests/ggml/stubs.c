/* The four ggml symbols ggml-quants.c refers to outside the quantizers we call (validation and
   the importance-matrix paths), so that file links as a small library of its own for the tests. */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>

void ggml_abort(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "ggml_abort at %s:%d\n", file, line);
    abort();
}
size_t ggml_row_size(int type, int64_t ne) { (void)type; (void)ne; abort(); }
const char *ggml_type_name(int type) { (void)type; return "?"; }
size_t ggml_type_size(int type) { (void)type; abort(); }
