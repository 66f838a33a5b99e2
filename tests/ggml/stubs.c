/* The four ggml symbols ggml-quants.c refers to outside its quantizers (validation and the
   importance-matrix paths), so that file links as a small library of its own for the tests and
   benchmarks. ggml_row_size / ggml_type_size answer for the types the quantize_* entry points
   ask about (block sizes and bytes from ggml.c's type_traits); anything else aborts loudly. */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <stdint.h>

void ggml_abort(const char *file, int line, const char *fmt, ...) {
    fprintf(stderr, "ggml_abort at %s:%d\n", file, line);
    abort();
}
struct block_traits { int type; int64_t block_size; size_t type_size; };
static const struct block_traits kTraits[] = {
    {0, 1, 4}, {1, 1, 2}, {2, 32, 18}, {3, 32, 20}, {6, 32, 22}, {7, 32, 24}, {8, 32, 34}, {9, 32, 36},
    {10, 256, 84}, {11, 256, 110}, {12, 256, 144}, {13, 256, 176}, {14, 256, 210}, {15, 256, 292},
    {20, 32, 18}, {23, 256, 136}, {30, 1, 2},
};
static const struct block_traits *traits_of(int type) {
    for (size_t i = 0; i < sizeof kTraits / sizeof kTraits[0]; ++i) {
        if (kTraits[i].type == type) return &kTraits[i];
    }
    fprintf(stderr, "ggml stub: no traits for type %d\n", type);
    abort();
}
size_t ggml_type_size(int type) { return traits_of(type)->type_size; }
size_t ggml_row_size(int type, int64_t ne) { return traits_of(type)->type_size * (size_t)(ne / traits_of(type)->block_size); }
const char *ggml_type_name(int type) { (void)type; return "?"; }
