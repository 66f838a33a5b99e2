/* A flat C interface to ik_llama.cpp's quantizers for bench/bench_anchors.py (ctypes), so the
   bench need not mirror ggml's type-traits struct. Bench only: not part of arrowquant. */
#include <stddef.h>
#include <stdint.h>

#include "ggml.h"

/* ggml_init fills ggml's fp16 -> fp32 table, which the quantizers and decoders read scales with. */
static void init_tables(void) {
  static int done = 0;
  if (!done) {
    struct ggml_init_params params = {0, NULL, true};
    ggml_free(ggml_init(params));
    done = 1;
  }
}

/* Bytes of one row of n_per_row values of `type` (its per-row header included). */
size_t ik_row_size(int type, int64_t n_per_row) { return ggml_row_size((enum ggml_type)type, n_per_row); }

/* Quantizes nrows rows, weighting the error by imatrix (n_per_row values) if not NULL. */
size_t ik_quantize(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row, const float *imatrix) {
  init_tables();
  ggml_quantize_init((enum ggml_type)type);
  return ggml_quantize_chunk((enum ggml_type)type, src, dst, 0, nrows, n_per_row, imatrix);
}

/* Decodes nrows rows back to float32 with the type's own decoder. */
void ik_dequantize(int type, const void *src, float *dst, int64_t nrows, int64_t n_per_row) {
  init_tables();
  ggml_type_traits_t traits = ggml_internal_get_type_traits((enum ggml_type)type);
  const size_t row = ggml_row_size((enum ggml_type)type, n_per_row);
  for (int64_t r = 0; r < nrows; ++r) {
    traits.to_float((const char *)src + r * row, dst + r * n_per_row, n_per_row);
  }
}
