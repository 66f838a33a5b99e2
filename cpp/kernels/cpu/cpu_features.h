// What the running CPU (and OS) can execute; read once, cheap to call.
#pragma once

namespace arrowquant::kernels {

struct CpuFeatures {
  bool avx2_fma_f16c = false;        // the AVX2 path: AVX2 + FMA + F16C
  bool avx512_f_bw_vl_dq = false;    // the AVX-512 path: F, BW, VL, DQ
  bool avx512_bf16 = false;          // reported only; bf16 -> f32 widening needs no instruction
};

const CpuFeatures& cpu_features();

}  // namespace arrowquant::kernels
