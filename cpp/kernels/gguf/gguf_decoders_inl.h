// Decoders of Q5_0, Q5_1 and Q6_K written so that the compiler vectorises them: the same source is
// included by the reference translation unit (baseline ISA) and by the AVX2 / AVX-512 ones (their
// own namespaces and flags), where the per-element variable shifts become vector shifts. Each
// performs dequantize_row_*'s float operations in the same order (Q6_K: (d * scale) * q; Q5_1:
// q * d + m), so every path gives ggml's floats. Needs `load_half_bytes(const uint8_t*)` from the
// including file; no include guard (included once per namespace).

void decode_q5_0_vectorised(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / 32; ++b, in += 22, y += 32) {
    const float d = load_half_bytes(in);
    uint32_t qh;
    __builtin_memcpy(&qh, in + 2, 4);
    const uint8_t* qs = in + 6;
    for (int j = 0; j < 16; ++j) {
      const int32_t x0 = static_cast<int32_t>((qs[j] & 0x0Fu) | (((qh >> j) << 4) & 0x10u)) - 16;
      const int32_t x1 = static_cast<int32_t>((qs[j] >> 4) | ((qh >> (j + 12)) & 0x10u)) - 16;
      y[j] = static_cast<float>(x0) * d;
      y[j + 16] = static_cast<float>(x1) * d;
    }
  }
}

void decode_q5_1_vectorised(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / 32; ++b, in += 24, y += 32) {
    const float d = load_half_bytes(in), m = load_half_bytes(in + 2);
    uint32_t qh;
    __builtin_memcpy(&qh, in + 4, 4);
    const uint8_t* qs = in + 8;
    for (int j = 0; j < 16; ++j) {
      const uint32_t x0 = (qs[j] & 0x0Fu) | (((qh >> j) << 4) & 0x10u);
      const uint32_t x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10u);
      y[j] = static_cast<float>(x0) * d + m;
      y[j + 16] = static_cast<float>(x1) * d + m;
    }
  }
}

void decode_q6_K_vectorised(const uint8_t* __restrict in, int64_t n, float* __restrict y) {
  for (int64_t b = 0; b < n / 256; ++b, in += 210, y += 256) {
    const float d = load_half_bytes(in + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(in + 192);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = in + 64 * half;
      const uint8_t* qh = in + 128 + 32 * half;
      float* out = y + 128 * half;
      for (int is = 0; is < 2; ++is) {  // 16 values share each scale
        const float s1 = d * static_cast<float>(sc[8 * half + is + 0]);
        const float s2 = d * static_cast<float>(sc[8 * half + is + 2]);
        const float s3 = d * static_cast<float>(sc[8 * half + is + 4]);
        const float s4 = d * static_cast<float>(sc[8 * half + is + 6]);
        for (int l = 16 * is; l < 16 * is + 16; ++l) {
          const int32_t q1 = static_cast<int32_t>((ql[l] & 0xFu) | (((qh[l] >> 0) & 3u) << 4)) - 32;
          const int32_t q2 = static_cast<int32_t>((ql[l + 32] & 0xFu) | (((qh[l] >> 2) & 3u) << 4)) - 32;
          const int32_t q3 = static_cast<int32_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3u) << 4)) - 32;
          const int32_t q4 = static_cast<int32_t>((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3u) << 4)) - 32;
          out[l + 0] = s1 * static_cast<float>(q1);
          out[l + 32] = s2 * static_cast<float>(q2);
          out[l + 64] = s3 * static_cast<float>(q3);
          out[l + 96] = s4 * static_cast<float>(q4);
        }
      }
    }
  }
}
