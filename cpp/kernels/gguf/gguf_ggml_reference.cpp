// ggml's block formats, its reference quantizers (ggml-quants.c, quantize_row_*_ref, no
// importance matrix), reproduced operation for operation so the bytes match what ggml's baseline
// x86-64 build (llama-quantize without an imatrix) writes. Every float expression keeps ggml's
// order of operations and types; this unit is compiled without FMA contraction (CMakeLists.txt),
// since a fused multiply-add rounds once where ggml's baseline build rounds twice.
//
// Block layouts (ggml-common.h), little-endian, fp16 = IEEE binary16:
//   Q4_0  (32):  d fp16, qs[16]                      x = (q - 8) d, low nibbles first half
//   Q4_1  (32):  d fp16, m fp16, qs[16]              x = q d + m
//   Q5_0  (32):  d fp16, qh[4], qs[16]               x = (q - 16) d, 5th bits in qh
//   Q5_1  (32):  d fp16, m fp16, qh[4], qs[16]       x = q d + m
//   Q8_0  (32):  d fp16, qs[32] int8                 x = q d
//   Q2_K (256):  scales[16], qs[64], d, dmin         16 x 16, 4-bit scale and min per 16
//   Q3_K (256):  hmask[32], qs[64], scales[12], d    16 x 16, 6-bit signed scales
//   Q4_K (256):  d, dmin, scales[12], qs[128]        8 x 32, 6-bit scales and mins
//   Q5_K (256):  d, dmin, scales[12], qh[32], qs[128]
//   Q6_K (256):  ql[128], qh[64], scales[16] int8, d 16 x 16, 8-bit scales
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/common/float16.h"
#include "kernels/gguf/gguf_kernels.h"
#include "kernels/gguf/gguf_reference_parts.h"
#include "kernels/gguf/gguf_simd.h"

namespace arrowquant::kernels::gguf {

namespace {

using baseline::float_to_bfloat16;
using baseline::float_to_half;
using baseline::half_to_float;
using baseline::bfloat16_to_float;

constexpr int QK_K = kSuperBlock;
constexpr float GROUP_MAX_EPS = 1e-15f;

void store_half(uint8_t* p, float v) {
  const uint16_t h = float_to_half(v);
  std::memcpy(p, &h, 2);
}

float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

// Round to nearest (ties to even) through the float adder, exactly as ggml's nearest_int.
inline int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

// ------------------------------------------------------------------------------------------------
// Float formats

void encode_f32(const float* x, int64_t n, uint8_t* out) { std::memcpy(out, x, static_cast<size_t>(n) * 4); }
void decode_f32(const uint8_t* in, int64_t n, float* y) { std::memcpy(y, in, static_cast<size_t>(n) * 4); }

void encode_f16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) store_half(out + 2 * i, x[i]);
}
void decode_f16(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = load_half(in + 2 * i);
}

void encode_bf16(const float* x, int64_t n, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t b = float_to_bfloat16(x[i]);
    std::memcpy(out + 2 * i, &b, 2);
  }
}
void decode_bf16(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t i = 0; i < n; ++i) {
    uint16_t b;
    std::memcpy(&b, in + 2 * i, 2);
    y[i] = bfloat16_to_float(b);
  }
}

// ------------------------------------------------------------------------------------------------
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (blocks of 32)

constexpr int QK = 32;

void encode_q4_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK, out += 18) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
      const float v = x[j];
      if (amax < std::fabs(v)) {
        amax = std::fabs(v);
        max = v;
      }
    }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    store_half(out, d);
    for (int j = 0; j < QK / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[QK / 2 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
      out[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void decode_q4_0(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK; ++b, in += 18, y += QK) {
    const float d = load_half(in);
    for (int j = 0; j < QK / 2; ++j) {
      const int x0 = (in[2 + j] & 0x0F) - 8;
      const int x1 = (in[2 + j] >> 4) - 8;
      y[j] = static_cast<float>(x0) * d;
      y[j + QK / 2] = static_cast<float>(x1) * d;
    }
  }
}

void min_max_32(const float* x, float* min_out, float* max_out) {
  float min = 3.402823466e+38F, max = -3.402823466e+38F;
  for (int j = 0; j < QK; j++) {
    const float v = x[j];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  *min_out = min;
  *max_out = max;
}

void encode_q4_1(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK, out += 20) {
    float min, max;
    min_max_32(x, &min, &max);
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    store_half(out, d);
    store_half(out + 2, min);
    for (int j = 0; j < QK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[QK / 2 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f))));
      out[4 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void decode_q4_1(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK; ++b, in += 20, y += QK) {
    const float d = load_half(in), m = load_half(in + 2);
    for (int j = 0; j < QK / 2; ++j) {
      y[j] = static_cast<float>(in[4 + j] & 0x0F) * d + m;
      y[j + QK / 2] = static_cast<float>(in[4 + j] >> 4) * d + m;
    }
  }
}

void encode_q5_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK, out += 22) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
      const float v = x[j];
      if (amax < std::fabs(v)) {
        amax = std::fabs(v);
        max = v;
      }
    }
    const float d = max / -16;
    const float id = d ? 1.0f / d : 0.0f;
    store_half(out, d);
    uint32_t qh = 0;
    for (int j = 0; j < QK / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[QK / 2 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x0 + 16.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x1 + 16.5f))));
      out[6 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
      qh |= ((xi1 & 0x10u) >> 4) << (j + QK / 2);
    }
    std::memcpy(out + 2, &qh, 4);
  }
}

void decode_q5_0(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK; ++b, in += 22, y += QK) {
    const float d = load_half(in);
    uint32_t qh;
    std::memcpy(&qh, in + 2, 4);
    for (int j = 0; j < QK / 2; ++j) {
      const uint8_t xh_0 = static_cast<uint8_t>(((qh >> (j + 0)) << 4) & 0x10);
      const uint8_t xh_1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
      const int32_t x0 = ((in[6 + j] & 0x0F) | xh_0) - 16;
      const int32_t x1 = ((in[6 + j] >> 4) | xh_1) - 16;
      y[j] = static_cast<float>(x0) * d;
      y[j + QK / 2] = static_cast<float>(x1) * d;
    }
  }
}

void encode_q5_1(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK, out += 24) {
    float min, max;
    min_max_32(x, &min, &max);
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    store_half(out, d);
    store_half(out + 2, min);
    uint32_t qh = 0;
    for (int j = 0; j < QK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[QK / 2 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(x0 + 0.5f);
      const uint8_t xi1 = static_cast<uint8_t>(x1 + 0.5f);
      out[8 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
      qh |= ((xi1 & 0x10u) >> 4) << (j + QK / 2);
    }
    std::memcpy(out + 4, &qh, 4);
  }
}

void decode_q5_1(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK; ++b, in += 24, y += QK) {
    const float d = load_half(in), m = load_half(in + 2);
    uint32_t qh;
    std::memcpy(&qh, in + 4, 4);
    for (int j = 0; j < QK / 2; ++j) {
      const uint8_t xh_0 = static_cast<uint8_t>(((qh >> (j + 0)) << 4) & 0x10);
      const uint8_t xh_1 = static_cast<uint8_t>((qh >> (j + 12)) & 0x10);
      const int x0 = (in[8 + j] & 0x0F) | xh_0;
      const int x1 = (in[8 + j] >> 4) | xh_1;
      y[j] = static_cast<float>(x0) * d + m;
      y[j + QK / 2] = static_cast<float>(x1) * d + m;
    }
  }
}

void encode_q8_0(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / QK; ++b, x += QK, out += 34) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    store_half(out, d);
    for (int j = 0; j < QK; ++j) out[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
  }
}

void decode_q8_0(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK; ++b, in += 34, y += QK) {
    const float d = load_half(in);
    for (int j = 0; j < QK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(in[2 + j])) * d;
  }
}

// ------------------------------------------------------------------------------------------------
// k-quant helpers (make_qx_quants, make_q3_quants, make_qkx2_quants, get_scale_min_k4)

float make_qx_quants(int n, int nmax, const float* x, int8_t* L, int rmse_type, const float* qw = nullptr) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = static_cast<float>(-nmax) / max;
  // rmse_type 1 (weights x^2) is what the reference quantizers use; qw (an importance matrix's
  // weights) replaces it in ggml's importance-weighted quantizers.
  auto weight = [&](int i) { return qw ? qw[i] : rmse_type == 1 ? x[i] * x[i] : 1.0f; };
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = weight(i);
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = weight(i);
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l) * static_cast<float>(l);
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {  // do_rmse = true
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = static_cast<float>(-nmax) / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * static_cast<float>(L[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * static_cast<float>(L[i]) * static_cast<float>(L[i]);
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * static_cast<float>(new_l);
          sl2 += w * static_cast<float>(new_l) * static_cast<float>(new_l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * static_cast<float>(L[i]) + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * static_cast<float>(l);
      sum_l2 += w * static_cast<float>(l) * static_cast<float>(l);
      sum_xl += w * static_cast<float>(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// ------------------------------------------------------------------------------------------------
// Q2_K

void encode_q2_K(const float* x, int64_t n, uint8_t* out) {
  uint8_t L[QK_K], Laux[16];
  float weights[16], mins[QK_K / 16], scales[QK_K / 16];
  const float q4scale = 15.f;
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K, out += 84) {
    uint8_t* y_scales = out;
    uint8_t* y_qs = out + 16;
    uint8_t* y_d = out + 80;
    uint8_t* y_dmin = out + 82;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < QK_K / 16; ++j) y_scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      store_half(y_d, max_scale / q4scale);
    } else {
      for (int j = 0; j < QK_K / 16; ++j) y_scales[j] = 0;
      store_half(y_d, 0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < QK_K / 16; ++j) y_scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
      store_half(y_dmin, max_min / q4scale);
    } else {
      store_half(y_dmin, 0.f);
    }
    for (int j = 0; j < QK_K / 16; ++j) {
      const float d = load_half(y_d) * static_cast<float>(y_scales[j] & 0xF);
      if (!d) continue;
      const float dm = load_half(y_dmin) * static_cast<float>(y_scales[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        const int l = nearest_int((x[16 * j + ii] + dm) / d);
        L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, l)));
      }
    }
    for (int j = 0; j < QK_K; j += 128) {
      for (int l = 0; l < 32; ++l) {
        y_qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
      }
    }
  }
}

void decode_q2_K(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  // dequantize_row_q2_K's operations, written with indexed stores so that the compiler vectorises.
  for (int64_t b = 0; b < n / QK_K; ++b, in += 84, y += QK_K) {
    const uint8_t* scales = in;
    const float d = load_half(in + 80), min = load_half(in + 82);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = in + 16 + 32 * half;
      for (int j = 0; j < 4; ++j) {
        const int shift = 2 * j;
        for (int part = 0; part < 2; ++part) {
          const uint8_t sc = scales[8 * half + 2 * j + part];
          const float dl = d * static_cast<float>(sc & 0xF), ml = min * static_cast<float>(sc >> 4);
          float* out = y + 128 * half + 32 * j + 16 * part;
          for (int l = 0; l < 16; ++l) {
            out[l] = dl * static_cast<float>(static_cast<int8_t>((q[l + 16 * part] >> shift) & 3)) - ml;
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Q3_K

// Q3_K's last steps, the same in the reference and the importance-weighted quantizer: codes
// re-rounded against the stored 6-bit scales, the high bit of each into hmask, the low two packed.
void q3_K_codes(const float* x, int8_t* L, uint8_t* out) {
  uint8_t* hmask = out;
  uint8_t* qs = out + 32;
  const uint8_t* y_scales = out + 96;
  const uint8_t* y_d = out + 108;
  for (int j = 0; j < QK_K / 16; ++j) {
    int8_t sc = static_cast<int8_t>(j < 8 ? y_scales[j] & 0xF : y_scales[j - 8] >> 4);
    sc = static_cast<int8_t>((sc | (((y_scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32);
    const float d = load_half(y_d) * static_cast<float>(sc);
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      int l = nearest_int(x[16 * j + ii] / d);
      l = std::max(-4, std::min(3, l));
      L[16 * j + ii] = static_cast<int8_t>(l + 4);
    }
  }
  std::memset(hmask, 0, QK_K / 8);
  int m = 0;
  uint8_t hm = 1;
  for (int j = 0; j < QK_K; ++j) {
    if (L[j] > 3) {
      hmask[m] |= hm;
      L[j] = static_cast<int8_t>(L[j] - 4);
    }
    if (++m == QK_K / 8) {
      m = 0;
      hm = static_cast<uint8_t>(hm << 1);
    }
  }
  for (int j = 0; j < QK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

void encode_q3_K(const float* x, int64_t n, uint8_t* out) {
  int8_t L[QK_K];
  float scales[QK_K / 16];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K, out += 110) {
    uint8_t* y_scales = out + 96;
    uint8_t* y_d = out + 108;
    float max_scale = 0, amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    std::memset(y_scales, 0, 12);
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < QK_K / 16; ++j) {
        int8_t l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
        l = static_cast<int8_t>(std::max<int>(-32, std::min<int>(31, l)) + 32);
        if (j < 8) {
          y_scales[j] = static_cast<uint8_t>(l & 0xF);
        } else {
          y_scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
        }
        l = static_cast<int8_t>(l >> 4);
        y_scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
      }
      store_half(y_d, 1 / iscale);
    } else {
      store_half(y_d, 0.f);
    }
    q3_K_codes(x, L, out);
  }
}

void decode_q3_K(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  // dequantize_row_q3_K's operations, written with indexed stores so that the compiler vectorises.
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  uint32_t aux[4];
  for (int64_t b = 0; b < n / QK_K; ++b, in += 110, y += QK_K) {
    const float d_all = load_half(in + 108);
    const uint8_t* hm = in;
    std::memcpy(aux, in + 96, 12);
    const uint32_t tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
    aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
    aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
    aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
    int8_t scales[16];
    std::memcpy(scales, aux, 16);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* q = in + 32 + 32 * half;
      for (int j = 0; j < 4; ++j) {
        const int shift = 2 * j;
        const uint8_t m = static_cast<uint8_t>(1u << (4 * half + j));
        for (int part = 0; part < 2; ++part) {
          const float dl = d_all * static_cast<float>(scales[8 * half + 2 * j + part] - 32);
          float* out = y + 128 * half + 32 * j + 16 * part;
          for (int l = 0; l < 16; ++l) {
            const int k = l + 16 * part;
            out[l] = dl * static_cast<float>(static_cast<int8_t>((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
          }
        }
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Q4_K and Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins against two fp16 super-block values

// The 12-byte packing of 8 six-bit scales and mins (as ggml's quantize_row_q4_K_ref).
void pack_scales_mins(const uint8_t* ls, const uint8_t* lm, uint8_t* scales12) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales12[j] = ls[j];
      scales12[j + 4] = lm[j];
    } else {
      scales12[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      scales12[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      scales12[j - 0] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

// Q4_K / Q5_K's second stage: codes re-rounded against the scales and mins actually stored.
template <int kMaxCode>
void rerounded_codes(const float* x, uint8_t* L, const uint8_t* scales12, const uint8_t* y_d, const uint8_t* y_dmin) {
  uint8_t sc, m;
  for (int j = 0; j < QK_K / 32; ++j) {
    get_scale_min_k4(j, scales12, &sc, &m);
    const float d = load_half(y_d) * static_cast<float>(sc);
    if (!d) continue;
    const float dm = load_half(y_dmin) * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(kMaxCode, l)));
    }
  }
}

// The first stage both share: per sub-block scale and min by make_qkx2_quants, then the 12-byte
// packed 6-bit scales/mins and the fp16 d and dmin. Returns nothing; fills `scales12`, d, dmin.
template <int kMaxCode>
void kquant_scales(const float* x, uint8_t* L, uint8_t* scales12, uint8_t* y_d, uint8_t* y_dmin,
                   float rmin, int nstep) {
  uint8_t Laux[32];
  float weights[32], mins[QK_K / 32], scales[QK_K / 32];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < QK_K / 32; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] = make_qkx2_quants(32, kMaxCode, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[QK_K / 32], lm[QK_K / 32];
  for (int j = 0; j < QK_K / 32; ++j) {
    ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
    lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
  }
  pack_scales_mins(ls, lm, scales12);
  store_half(y_d, max_scale / 63.f);
  store_half(y_dmin, max_min / 63.f);
  rerounded_codes<kMaxCode>(x, L, scales12, y_d, y_dmin);
}

// The codes of one Q4_K / Q5_K block (4-bit low nibbles; Q5_K's fifth bits in qh), as ggml packs them.
void pack_q4_K_codes(const uint8_t* L, uint8_t* out) {
  uint8_t* q = out + 16;
  for (int j = 0; j < QK_K; j += 64) {
    for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    q += 32;
  }
}

void pack_q5_K_codes(const uint8_t* L, uint8_t* out) {
  uint8_t* qh = out + 16;
  uint8_t* ql = out + 48;
  std::memset(qh, 0, QK_K / 8);
  uint8_t m1 = 1, m2 = 2;
  for (int k = 0; k < QK_K; k += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[k + j];
      if (l1 > 15) {
        l1 -= 16;
        qh[j] |= m1;
      }
      int l2 = L[k + j + 32];
      if (l2 > 15) {
        l2 -= 16;
        qh[j] |= m2;
      }
      ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<uint8_t>(m1 << 2);
    m2 = static_cast<uint8_t>(m2 << 2);
    ql += 32;
  }
}

void encode_q4_K(const float* x, int64_t n, uint8_t* out) {
  uint8_t L[QK_K];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K, out += 144) {
    kquant_scales<15>(x, L, out + 4, out, out + 2, -1.f, 20);
    pack_q4_K_codes(L, out);
  }
}

void decode_q4_K(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK_K; ++b, in += 144) {
    const uint8_t* q = in + 16;
    const float d = load_half(in), min = load_half(in + 2);
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < QK_K; j += 64) {
      get_scale_min_k4(is + 0, in + 4, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
      get_scale_min_k4(is + 1, in + 4, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

void encode_q5_K(const float* x, int64_t n, uint8_t* out) {
  uint8_t L[QK_K];
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K, out += 176) {
    kquant_scales<31>(x, L, out + 4, out, out + 2, -0.5f, 15);
    pack_q5_K_codes(L, out);
  }
}

void decode_q5_K(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK_K; ++b, in += 176) {
    const uint8_t* ql = in + 48;
    const uint8_t* qh = in + 16;
    const float d = load_half(in), min = load_half(in + 2);
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < QK_K; j += 64) {
      get_scale_min_k4(is + 0, in + 4, &sc, &m);
      const float d1 = d * static_cast<float>(sc), m1 = min * static_cast<float>(m);
      get_scale_min_k4(is + 1, in + 4, &sc, &m);
      const float d2 = d * static_cast<float>(sc), m2 = min * static_cast<float>(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      is += 2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

// Squared error of an encoded block against x, through the type's own decoder.
double block_error(DecodeFn decode, const uint8_t* block, const float* x) {
  float y[QK_K];
  decode(block, QK_K, y);
  double err = 0;
  for (int i = 0; i < QK_K; ++i) {
    const double diff = static_cast<double>(y[i]) - x[i];
    err += diff * diff;
  }
  return err;
}


// ------------------------------------------------------------------------------------------------
// Q6_K: 16 sub-blocks of 16 with int8 scales against one fp16 super-block scale

// One block of Q6_K; qw (16 weights per sub-block, or null for the reference's x^2) is the
// importance-weighted quantizer's only change.
void encode_q6_K_block(const float* x, uint8_t* out, const float* qw) {
  int8_t L[QK_K];
  float scales[QK_K / 16];
  {
    uint8_t* ql = out;
    uint8_t* qh = out + 128;
    int8_t* y_scales = reinterpret_cast<int8_t*>(out + 192);
    uint8_t* y_d = out + 208;
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < QK_K / 16; ++ib) {
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : nullptr);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < GROUP_MAX_EPS) {
      std::memset(out, 0, 210);
      store_half(y_d, 0.f);
      return;
    }
    const float iscale = -128.f / max_scale;
    store_half(y_d, 1 / iscale);
    for (int ib = 0; ib < QK_K / 16; ++ib) y_scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    for (int j = 0; j < QK_K / 16; ++j) {
      const float d = load_half(y_d) * static_cast<float>(y_scales[j]);
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    for (int j = 0; j < QK_K; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l + 0] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
      ql += 64;
      qh += 32;
    }
  }
}

void encode_q6_K(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / QK_K; ++b) encode_q6_K_block(x + b * QK_K, out + b * 210, nullptr);
}


void decode_q6_K(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK_K; ++b, in += 210) {
    const float d = load_half(in + 208);
    const uint8_t* ql = in;
    const uint8_t* qh = in + 128;
    const int8_t* sc = reinterpret_cast<const int8_t*>(in + 192);
    for (int k = 0; k < QK_K; k += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int8_t q1 = static_cast<int8_t>(((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
        const int8_t q2 = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
        const int8_t q3 = static_cast<int8_t>(((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        const int8_t q4 = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
        y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
        y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
        y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// IQ4_NL (blocks of 32: d fp16, qs[16]) and IQ4_XS (256: d fp16, scales_h u16, scales_l[4],
// qs[128]): 4-bit indices into a fixed non-uniform grid. As llama-quantize writes them without an
// importance matrix: quantize_iq4_nl / quantize_iq4_xs, i.e. quantize_row_iq4_nl_impl with
// ntry = 7 and weights x^2.

constexpr int8_t kValuesIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline int best_index_int8(const int8_t* val, float x) {
  if (x <= val[0]) return 0;
  if (x >= val[15]) return 15;
  int ml = 0, mu = 15;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < val[mav]) mu = mav; else ml = mav;
  }
  return x - static_cast<float>(val[mu - 1]) < static_cast<float>(val[mu]) - x ? mu - 1 : mu;
}

// quantize_row_iq4_nl_impl(super_block_size, 32, x, ..., quant_weights = NULL, ntry = 7).
template <int kSuperBlock>
void iq4_impl(const float* x, uint8_t* dh, uint8_t* q4, uint8_t* scales_h, uint8_t* scales_l,
              const float* qw = nullptr) {
  constexpr int ntry = 7;
  const int8_t* values = kValuesIq4nl;
  uint8_t L[kSuperBlock];
  float scales[kSuperBlock / 32], weight[32];
  float sigma2 = 0;
  if (qw) {
    for (int j = 0; j < kSuperBlock; ++j) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / kSuperBlock;
  }
  std::memset(q4, 0, kSuperBlock / 2);
  store_half(dh, 0.f);
  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
    const float* xb = x + ib * 32;
    uint8_t* Lb = L + ib * 32;
    if (qw) {  // importance weights: qw * sqrt(sigma2 + x^2), sigma2 over the super-block
      for (int j = 0; j < 32; ++j) weight[j] = qw[ib * 32 + j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    } else {
      for (int j = 0; j < 32; ++j) weight[j] = xb[j] * xb[j];
    }
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j) {
      const float ax = std::fabs(xb[j]);
      if (ax > amax) {
        amax = ax;
        max = xb[j];
      }
    }
    if (amax < GROUP_MAX_EPS) {
      scales[ib] = 0;
      continue;
    }
    float d = -max / static_cast<float>(values[0]);
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float al = id * xb[j];
      const int l = best_index_int8(values, al);
      Lb[j] = static_cast<uint8_t>(l);
      const float q = values[l];
      const float w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    d = sumq2 > 0 ? sumqx / sumq2 : 0.f;
    float best = d * sumqx;
    for (int itry = -ntry; itry <= ntry; ++itry) {
      id = static_cast<float>(itry + values[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < 32; ++j) {
        const float al = id * xb[j];
        const int l = best_index_int8(values, al);
        const float q = values[l];
        const float w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
    scales[ib] = d;
    const float abs_d = std::fabs(d);
    if (abs_d > amax_scale) {
      amax_scale = abs_d;
      max_scale = d;
    }
  }
  if constexpr (kSuperBlock > 32) {
    uint16_t sh = 0;
    const float d = -max_scale / 32;
    store_half(dh, d);
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < kSuperBlock / 32; ++ib) {
      int l = nearest_int(id * scales[ib]);
      l = std::max(-32, std::min(31, l));
      const float dl = d * static_cast<float>(l);
      const float idl = dl ? 1 / dl : 0.f;
      uint8_t* Lb = L + ib * 32;
      const float* xb = x + ib * 32;
      for (int j = 0; j < 32; ++j) Lb[j] = static_cast<uint8_t>(best_index_int8(values, idl * xb[j]));
      l += 32;
      const uint8_t l_l = static_cast<uint8_t>(l & 0xf), l_h = static_cast<uint8_t>(l >> 4);
      if (ib % 2 == 0) {
        scales_l[ib / 2] = l_l;
      } else {
        scales_l[ib / 2] |= static_cast<uint8_t>(l_l << 4);
      }
      sh = static_cast<uint16_t>(sh | (l_h << 2 * (ib % 8)));
    }
    std::memcpy(scales_h, &sh, 2);
  } else {
    store_half(dh, scales[0]);
    const float id = scales[0] ? 1 / scales[0] : 0;
    for (int j = 0; j < kSuperBlock; ++j) L[j] = static_cast<uint8_t>(best_index_int8(values, id * x[j]));
  }
  for (int i = 0; i < kSuperBlock / 32; ++i) {
    for (int j = 0; j < 16; ++j) q4[16 * i + j] = static_cast<uint8_t>(L[32 * i + j] | (L[32 * i + 16 + j] << 4));
  }
}

void encode_iq4_nl(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / 32; ++b, x += 32, out += 18) iq4_impl<32>(x, out, out + 2, nullptr, nullptr);
}

void decode_iq4_nl(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / 32; ++b, in += 18, y += 32) {
    const float d = load_half(in);
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(kValuesIq4nl[in[2 + j] & 0xf]);
      y[j + 16] = d * static_cast<float>(kValuesIq4nl[in[2 + j] >> 4]);
    }
  }
}

void encode_iq4_xs(const float* x, int64_t n, uint8_t* out) {
  for (int64_t b = 0; b < n / QK_K; ++b, x += QK_K, out += 136) iq4_impl<QK_K>(x, out, out + 8, out + 2, out + 4);
}

void decode_iq4_xs(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / QK_K; ++b, in += 136) {
    const float d = load_half(in);
    uint16_t scales_h;
    std::memcpy(&scales_h, in + 2, 2);
    const uint8_t* scales_l = in + 4;
    const uint8_t* qs = in + 8;
    for (int ib = 0; ib < QK_K / 32; ++ib) {
      const int ls = ((scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      for (int j = 0; j < 16; ++j) {
        y[j + 0] = dl * static_cast<float>(kValuesIq4nl[qs[j] & 0xf]);
        y[j + 16] = dl * static_cast<float>(kValuesIq4nl[qs[j] >> 4]);
      }
      y += 32;
      qs += 16;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// ggml's importance-weighted quantizers (quantize_q*_* with quant_weights, the path llama-quantize
// takes with --imatrix), one row at a time: qw holds one importance per column of the row (the
// imatrix entry of the tensor). Same operations, same order as ggml-quants.c's *_impl functions.

// ggml's make_qkx3_quants: make_qkx2_quants with squared errors, for nstep >= 1 (its only callers
// pass 36; it differs from make_qkx2_quants only in returning early for nstep < 1).
float make_qkx3_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep) {
  return make_qkx2_quants(n, nmax, x, weights, L, the_min, Laux, rmin, rdelta, nstep, false);
}

float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* quant_weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < GROUP_MAX_EPS) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = static_cast<float>(nmax) / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(nearest_int(iscale * x[i]));
  const float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * static_cast<float>(L[i]);
    best_mse += quant_weights[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * static_cast<float>(is) + static_cast<float>(nmax)) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::min(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * static_cast<float>(l);
      mse += quant_weights[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<uint8_t>(l);
    const float w = quant_weights[i];
    sumlx += w * x[i] * static_cast<float>(l);
    suml2 += w * static_cast<float>(l) * static_cast<float>(l);
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = quant_weights[i];
      const float li = static_cast<float>(L[i]);
      float slx = sumlx - w * x[i] * li;
      float sl2 = suml2 - w * li * li;
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * static_cast<float>(new_l);
          sl2 += w * static_cast<float>(new_l) * static_cast<float>(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Q4_K / Q5_K with importance weights: sub-block weights qw * sqrt(sigma2 + x^2), scales and mins
// fitted by make_qkx3_quants, the 6-bit super-block scales by make_qp_quants.
template <int kMaxCode>
void kquant_scales_imatrix(const float* x, const float* qw, uint8_t* L, uint8_t* scales12, uint8_t* y_d,
                           uint8_t* y_dmin) {
  uint8_t Laux[32], Ls[QK_K / 32], Lm[QK_K / 32];
  float weights[32], sw[QK_K / 32], mins[QK_K / 32], scales[QK_K / 32];
  float sum_x2 = 0;
  for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
  const float sigma2 = 2 * sum_x2 / QK_K;
  for (int j = 0; j < QK_K / 32; ++j) {
    for (int l = 0; l < 32; ++l) weights[l] = qw[32 * j + l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
    float sumw = 0;
    for (int l = 0; l < 32; ++l) sumw += weights[l];
    sw[j] = sumw;
    scales[j] = make_qkx3_quants(32, kMaxCode, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
  }
  const float d_block = make_qp_quants(QK_K / 32, 63, scales, Ls, sw);
  const float m_block = make_qp_quants(QK_K / 32, 63, mins, Lm, sw);
  for (int j = 0; j < QK_K / 32; ++j) {
    Ls[j] = std::min<uint8_t>(63, Ls[j]);
    Lm[j] = std::min<uint8_t>(63, Lm[j]);
  }
  std::memset(scales12, 0, 12);
  pack_scales_mins(Ls, Lm, scales12);
  store_half(y_d, d_block);
  store_half(y_dmin, m_block);
  rerounded_codes<kMaxCode>(x, L, scales12, y_d, y_dmin);
}

void encode_q4_K_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  uint8_t L[QK_K];
  for (int64_t b = 0; b < n_per_row / QK_K; ++b, x += QK_K, qw += QK_K, out += 144) {
    kquant_scales_imatrix<15>(x, qw, L, out + 4, out, out + 2);
    pack_q4_K_codes(L, out);
  }
}

void encode_q5_K_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  uint8_t L[QK_K];
  for (int64_t b = 0; b < n_per_row / QK_K; ++b, x += QK_K, qw += QK_K, out += 176) {
    kquant_scales_imatrix<31>(x, qw, L, out + 4, out, out + 2);
    pack_q5_K_codes(L, out);
  }
}

void encode_q6_K_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  for (int64_t b = 0; b < n_per_row / QK_K; ++b) encode_q6_K_block(x + b * QK_K, out + b * 210, qw + b * QK_K);
}

// Q4_0 / Q5_0: weights qw * sqrt(sigma2 + x^2) with sigma2 over the whole row, make_qx_quants.
template <int kNmax, int kBytes>
void legacy_symmetric_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n_per_row; ++j) sum_x2 += x[j] * x[j];
  const float sigma2 = sum_x2 / static_cast<float>(n_per_row);
  float weight[QK];
  int8_t L[QK];
  for (int64_t ib = 0; ib < n_per_row / QK; ++ib, out += kBytes) {
    const float* xb = x + QK * ib;
    const float* w = qw + QK * ib;
    for (int j = 0; j < QK; ++j) weight[j] = w[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    store_half(out, make_qx_quants(QK, kNmax, xb, L, 1, weight));
    if constexpr (kNmax == 8) {
      for (int j = 0; j < 16; ++j) out[2 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
    } else {
      uint32_t qh = 0;
      for (int j = 0; j < 16; ++j) {
        const uint8_t xi0 = static_cast<uint8_t>(L[j]), xi1 = static_cast<uint8_t>(L[j + 16]);
        out[6 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
        qh |= ((xi1 & 0x10u) >> 4) << (j + QK / 2);
      }
      std::memcpy(out + 2, &qh, 4);
    }
  }
}

// Q4_1 / Q5_1: make_qkx3_quants (scale and min) on the same weights.
template <int kNmax, int kBytes>
void legacy_affine_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n_per_row; ++j) sum_x2 += x[j] * x[j];
  const float sigma2 = sum_x2 / static_cast<float>(n_per_row);
  float weight[QK];
  uint8_t L[QK], Laux[QK];
  for (int64_t ib = 0; ib < n_per_row / QK; ++ib, out += kBytes) {
    const float* xb = x + QK * ib;
    const float* w = qw + QK * ib;
    for (int j = 0; j < QK; ++j) weight[j] = w[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    float min;
    const float d = make_qkx3_quants(QK, kNmax, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36);
    store_half(out, d);
    store_half(out + 2, -min);
    if constexpr (kNmax == 15) {
      for (int j = 0; j < 16; ++j) out[4 + j] = static_cast<uint8_t>(L[j] | (L[j + 16] << 4));
    } else {
      uint32_t qh = 0;
      for (int j = 0; j < 16; ++j) {
        const uint8_t xi0 = L[j], xi1 = L[j + 16];
        out[8 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
        qh |= ((xi1 & 0x10u) >> 4) << (j + QK / 2);
      }
      std::memcpy(out + 4, &qh, 4);
    }
  }
}

// Q2_K: 16 sub-blocks of 16, scale and min by make_qkx3_quants, 4-bit super-block scales by
// make_qp_quants, codes re-rounded against what is stored.
void encode_q2_K_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  uint8_t L[QK_K], Laux[16], Ls[QK_K / 16], Lm[QK_K / 16];
  float mins[QK_K / 16], scales[QK_K / 16], sw[QK_K / 16], weight[16];
  for (int64_t b = 0; b < n_per_row / QK_K; ++b, x += QK_K, qw += QK_K, out += 84) {
    uint8_t* y_scales = out;
    uint8_t* y_qs = out + 16;
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      sw[j] = 0;
      for (int l = 0; l < 16; ++l) sw[j] += weight[l];
      scales[j] = make_qkx3_quants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36);
    }
    store_half(out + 80, make_qp_quants(QK_K / 16, 15, scales, Ls, sw));
    store_half(out + 82, make_qp_quants(QK_K / 16, 15, mins, Lm, sw));
    const float dm = load_half(out + 80), mm = load_half(out + 82);
    for (int j = 0; j < QK_K / 16; ++j) y_scales[j] = static_cast<uint8_t>(Ls[j] | (Lm[j] << 4));
    for (int j = 0; j < QK_K / 16; ++j) {
      const float d = dm * static_cast<float>(y_scales[j] & 0xF);
      if (!d) continue;
      const float m = mm * static_cast<float>(y_scales[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        const int l = nearest_int((x[16 * j + ii] + m) / d);
        L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, l)));
      }
    }
    for (int j = 0; j < QK_K; j += 128) {
      for (int l = 0; l < 32; ++l) {
        y_qs[j / 4 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
      }
    }
  }
}

// Q3_K: 16 sub-blocks of 16 by make_qx_quants on the weights, the 6-bit scales by make_qx_quants
// weighted by each sub-block's total weight.
void encode_q3_K_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  int8_t L[QK_K], Ls[QK_K / 16];
  float scales[QK_K / 16], weight[16], sw[QK_K / 16];
  for (int64_t b = 0; b < n_per_row / QK_K; ++b, x += QK_K, qw += QK_K, out += 110) {
    uint8_t* y_scales = out + 96;
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / QK_K;
    for (int j = 0; j < QK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
    }
    std::memset(y_scales, 0, 12);
    const float d_block = make_qx_quants(QK_K / 16, 32, scales, Ls, 1, sw);
    for (int j = 0; j < QK_K / 16; ++j) {
      int l = Ls[j];
      if (j < 8) {
        y_scales[j] = static_cast<uint8_t>(l & 0xF);
      } else {
        y_scales[j - 8] |= static_cast<uint8_t>((l & 0xF) << 4);
      }
      l >>= 4;
      y_scales[j % 4 + 8] |= static_cast<uint8_t>(l << (2 * (j / 4)));
    }
    store_half(out + 108, d_block);
    q3_K_codes(x, L, out);
  }
}

void encode_iq4_nl_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  for (int64_t b = 0; b < n_per_row / 32; ++b, x += 32, qw += 32, out += 18) iq4_impl<32>(x, out, out + 2, nullptr, nullptr, qw);
}

void encode_iq4_xs_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float* qw) {
  for (int64_t b = 0; b < n_per_row / QK_K; ++b, x += QK_K, qw += QK_K, out += 136) {
    iq4_impl<QK_K>(x, out, out + 8, out + 2, out + 4, qw);
  }
}

// Q8_0: ggml's quantize_q8_0 ignores the weights.
void encode_q8_0_imatrix(const float* x, int64_t n_per_row, uint8_t* out, const float*) { encode_q8_0(x, n_per_row, out); }

constexpr TypeTraits kTypes[] = {
    {GgmlType::kF32, "F32", 1, 4, encode_f32, decode_f32, nullptr, nullptr},
    {GgmlType::kF16, "F16", 1, 2, encode_f16, decode_f16, nullptr, nullptr},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, encode_q4_0, decode_q4_0, nullptr, nullptr, legacy_symmetric_imatrix<8, 18>},
    {GgmlType::kQ4_1, "Q4_1", 32, 20, encode_q4_1, decode_q4_1, nullptr, nullptr, legacy_affine_imatrix<15, 20>},
    {GgmlType::kQ5_0, "Q5_0", 32, 22, encode_q5_0, decode_q5_0, nullptr, nullptr, legacy_symmetric_imatrix<16, 22>},
    {GgmlType::kQ5_1, "Q5_1", 32, 24, encode_q5_1, decode_q5_1, nullptr, nullptr, legacy_affine_imatrix<31, 24>},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, encode_q8_0, decode_q8_0, baseline_lanes::encode_q8_0_search, nullptr,
     encode_q8_0_imatrix},
    {GgmlType::kQ2_K, "Q2_K", QK_K, 84, encode_q2_K, decode_q2_K, baseline_lanes::encode_q2_K_search, nullptr,
     encode_q2_K_imatrix},
    {GgmlType::kQ3_K, "Q3_K", QK_K, 110, encode_q3_K, decode_q3_K, baseline_lanes::encode_q3_K_search, nullptr,
     encode_q3_K_imatrix},
    {GgmlType::kQ4_K, "Q4_K", QK_K, 144, encode_q4_K, decode_q4_K, baseline_lanes::encode_q4_K_search,
     baseline_lanes::encode_q4_K_fast, encode_q4_K_imatrix},
    {GgmlType::kQ5_K, "Q5_K", QK_K, 176, encode_q5_K, decode_q5_K, baseline_lanes::encode_q5_K_search,
     baseline_lanes::encode_q5_K_fast, encode_q5_K_imatrix},
    {GgmlType::kQ6_K, "Q6_K", QK_K, 210, encode_q6_K, decode_q6_K, baseline_lanes::encode_q6_K_search, nullptr,
     encode_q6_K_imatrix},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 18, encode_iq4_nl, decode_iq4_nl, nullptr, nullptr, encode_iq4_nl_imatrix},
    {GgmlType::kIQ4_XS, "IQ4_XS", QK_K, 136, encode_iq4_xs, decode_iq4_xs, nullptr, nullptr, encode_iq4_xs_imatrix},
    {GgmlType::kBF16, "BF16", 1, 2, encode_bf16, decode_bf16, nullptr, nullptr},
};

}  // namespace

namespace reference_parts {

double block_error(DecodeFn decode, const uint8_t* block, const float* x) { return gguf::block_error(decode, block, x); }
void pack_scales_mins(const uint8_t* ls, const uint8_t* lm, uint8_t* scales12) { gguf::pack_scales_mins(ls, lm, scales12); }

}  // namespace reference_parts

std::span<const TypeTraits> supported_types() { return kTypes; }

const TypeTraits* find_type(int32_t ggml_id) {
  for (const TypeTraits& t : kTypes) {
    if (static_cast<int32_t>(t.type) == ggml_id) return &t;
  }
  return nullptr;
}

const TypeTraits* find_type(std::string_view name) {
  for (const TypeTraits& t : kTypes) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

}  // namespace arrowquant::kernels::gguf


namespace arrowquant::kernels::gguf {

namespace {

const SimdKernel* simd_kernel(GgmlType type, Isa isa) {
#if ARROWQUANT_X86_KERNELS
  if (isa != Isa::kAvx2 && isa != Isa::kAvx512) return nullptr;
  for (const SimdKernel& k : isa == Isa::kAvx512 ? avx512::simd_kernels() : avx2::simd_kernels()) {
    if (k.type == type) return &k;
  }
#else  // a build for another processor has no SIMD tables (CMakeLists.txt)
  (void)type;
  (void)isa;
#endif
  return nullptr;
}

// A type's own encoder of a kind: the ISA's lane version, else the type's; a type without one
// runs ggml's encoder, vectorised where the ISA has it.
EncodeFn own_or_ggml_encoder(const TypeTraits& type, Isa isa, EncodeFn SimdKernel::*simd, EncodeFn TypeTraits::*own) {
  const SimdKernel* k = simd_kernel(type.type, isa);
  if (k != nullptr && k->*simd != nullptr) return k->*simd;
  return type.*own != nullptr ? type.*own : ggml_encoder(type, isa);
}

}  // namespace

EncodeFn ggml_encoder(const TypeTraits& type, Isa isa) {
  const SimdKernel* k = simd_kernel(type.type, isa);
  return k != nullptr && k->encode_ggml != nullptr ? k->encode_ggml : type.encode_ggml;
}

EncodeFn search_encoder(const TypeTraits& type, Isa isa) {
  return own_or_ggml_encoder(type, isa, &SimdKernel::encode_search, &TypeTraits::encode_search);
}

EncodeFn fast_encoder(const TypeTraits& type, Isa isa) {
  return own_or_ggml_encoder(type, isa, &SimdKernel::encode_fast, &TypeTraits::encode_fast);
}

DecodeFn decoder(const TypeTraits& type, Isa isa) {
  const SimdKernel* k = simd_kernel(type.type, isa);
  return k != nullptr && k->decode != nullptr ? k->decode : type.decode;
}

}  // namespace arrowquant::kernels::gguf
