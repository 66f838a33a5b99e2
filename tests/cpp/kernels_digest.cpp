// Digests of every kernel's output on fixed inputs, one line per (SIMD path, kernel):
//   <path> <kernel> <64-bit FNV-1a digest of its output bytes>
// tests/test_portable.py compares the lines: every path of one build must match the scalar path,
// and the scalar path of a build for another CPU (aarch64 under qemu-user) must match this one's,
// which is the claim that a file's bytes do not depend on the machine that wrote it.
//
// Inputs come from an integer generator and exact float operations only (24-bit integers scaled
// by powers of two, cubed for heavy tails), so they are the same bits on every CPU.
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/common/float16.h"
#include "kernels/gguf/gguf_kernels.h"
#include "kernels/gguf/gguf_simd.h"
#include "kernels/quant/quant_kernels.h"
#include "kernels/rotation/rotation_kernels.h"

namespace {

using namespace arrowquant::kernels;

uint64_t fnv1a(const void* data, size_t bytes, uint64_t hash = 0xcbf29ce484222325ull) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 0x100000001b3ull;
  return hash;
}

template <typename T>
uint64_t digest(const std::vector<T>& v, uint64_t hash = 0xcbf29ce484222325ull) {
  return fnv1a(v.data(), v.size() * sizeof(T), hash);
}

// n values in about [-0.05, 0.05], heavy-tailed: a uniform 24-bit integer scaled to [-1, 1),
// cubed, times 0.05 (every step exact or correctly rounded, so identical on every CPU).
std::vector<float> make_values(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& x : v) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const auto u = static_cast<int32_t>(state >> 40) - (1 << 23);  // [-2^23, 2^23)
    const float f = static_cast<float>(u) * (1.0f / 8388608.0f);
    x = f * f * f * 0.05f;
  }
  return v;
}

void print(const char* isa, const std::string& kernel, uint64_t hash) {
  std::printf("%s %s %016" PRIx64 "\n", isa, kernel.c_str(), hash);
}

void affine_digests(Isa isa, const KernelTable& table, const std::vector<float>& values) {
  const int64_t rows = 24, cols = static_cast<int64_t>(values.size()) / rows;
  std::vector<uint16_t> halves(values.size()), bhalves(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    halves[i] = baseline::float_to_half(values[i]);
    bhalves[i] = baseline::float_to_bfloat16(values[i]);
  }
  const struct { ElementType type; const void* data; const char* name; } inputs[] = {
      {ElementType::kFloat32, values.data(), "f32"},
      {ElementType::kFloat16, halves.data(), "f16"},
      {ElementType::kBFloat16, bhalves.data(), "bf16"}};
  for (const auto& input : inputs) {
    for (int bits : {2, 4, 8}) {
      for (int32_t group : {16, 64, 128, 256}) {
        for (bool symmetric : {false, true}) {
          for (Method method : {Method::kRtn, Method::kSearch}) {
            QuantizeJob job;
            job.weights = input.data;
            job.element_type = input.type;
            job.geometry = {rows, cols, group};
            job.bits = bits;
            job.symmetric = symmetric;
            job.method = method;
            const int64_t groups = job.geometry.num_groups();
            std::vector<uint8_t> packed(static_cast<size_t>((job.geometry.numel() * bits + 7) / 8));
            std::vector<float> scales(static_cast<size_t>(groups)), zeros(static_cast<size_t>(groups));
            job.packed = packed.data();
            job.scales = scales.data();
            job.zero_points = zeros.data();
            ErrorStats stats;
            table.quantize_groups(job, 0, groups, &stats);
            DequantizeJob back;
            back.packed = packed.data();
            back.scales = scales.data();
            back.zero_points = zeros.data();
            back.geometry = job.geometry;
            back.bits = bits;
            std::vector<float> decoded(values.size());
            back.weights = decoded.data();
            table.dequantize_groups(back, 0, groups);
            const double sums[] = {stats.sum_xx, stats.sum_yy, stats.sum_xy, stats.sum_dd, stats.max_abs_error};
            const std::string name = std::string("affine/") + input.name + "/b" + std::to_string(bits) + "/g" +
                                     std::to_string(group) + (symmetric ? "/sym" : "/asym") +
                                     (method == Method::kRtn ? "/rtn" : "/search");
            print(isa_name(isa), name + "/encode",
                  fnv1a(sums, sizeof sums, digest(zeros, digest(scales, digest(packed)))));
            print(isa_name(isa), name + "/decode", digest(decoded));
          }
        }
      }
    }
  }
}

void rotation_digests(Isa isa, const std::vector<float>& values) {
  const rotation::RotationKernels k = rotation::rotation_kernels(isa);
  std::vector<float> v(values.begin(), values.begin() + 16 * rotation::kBlock);
  k.forward(v.data(), 16);
  print(isa_name(isa), "rotation/forward", digest(v));
  k.inverse(v.data(), 16);
  print(isa_name(isa), "rotation/inverse", digest(v));
}

void gguf_digests(Isa isa, const std::vector<float>& values) {
  const int64_t n = 16 * gguf::kSuperBlock;
  const std::vector<float> x(values.begin(), values.begin() + n);
  for (const gguf::TypeTraits& type : gguf::supported_types()) {
    std::vector<uint8_t> out(static_cast<size_t>(gguf::encoded_bytes(type, n)));
    const struct { const char* name; gguf::EncodeFn fn; } encoders[] = {
        {"ggml", gguf::ggml_encoder(type, isa)}, {"search", gguf::search_encoder(type, isa)},
        {"fast", gguf::fast_encoder(type, isa)}};
    for (const auto& e : encoders) {
      e.fn(x.data(), n, out.data());
      print(isa_name(isa), std::string("gguf/") + type.name + "/" + e.name, digest(out));
    }
    std::vector<float> decoded(static_cast<size_t>(n));
    gguf::ggml_encoder(type, isa)(x.data(), n, out.data());
    gguf::decoder(type, isa)(out.data(), n, decoded.data());
    print(isa_name(isa), std::string("gguf/") + type.name + "/decode", digest(decoded));
  }
}

}  // namespace

int main() {
  const std::vector<float> values = make_values(24 * 1000, 7);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    const KernelTable* table = kernels_for(isa);
    if (table == nullptr) continue;  // not in this build, or not on this CPU
    affine_digests(isa, *table, values);
    rotation_digests(isa, values);
    gguf_digests(isa, values);
  }
  return 0;
}
