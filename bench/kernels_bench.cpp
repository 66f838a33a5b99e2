// Google Benchmark for the kernels: every family (quantize RTN / search, dequantize, pack, unpack,
// min/max) x SIMD path x bit width x group size x input dtype, and the k-quant block encoders
// (ggml's reference, the fast fit, the search) and decoders x SIMD path, single thread, on one
// 4 MB-float32 tensor. memcpy and a streaming read over the same bytes are measured alongside, so every
// figure can be read as a fraction of the machine's bandwidth. Build: `make bench-cpp`.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/gguf/gguf_simd.h"
#include "kernels/quant/quant_kernels.h"

namespace {

using arrowquant::kernels::DequantizeJob;
using arrowquant::kernels::ElementType;
using arrowquant::kernels::GroupGeometry;
using arrowquant::kernels::Isa;
using arrowquant::kernels::KernelTable;
using arrowquant::kernels::Method;
using arrowquant::kernels::QuantizeJob;

constexpr int64_t kCols = 4096;
constexpr int64_t kRows = 256;
constexpr int64_t kElements = kRows * kCols;  // 1 M weights: 4 MB of float32

// Heavy-tailed test data, the same every run, in each input dtype.
struct TestData {
  std::vector<float> f32;
  std::vector<uint16_t> f16, bf16;

  TestData() : f32(kElements), f16(kElements), bf16(kElements) {
    std::mt19937 rng(42);
    std::student_t_distribution<float> t(4.0f);
    for (int64_t i = 0; i < kElements; ++i) {
      const float v = 0.02f * t(rng);
      f32[static_cast<size_t>(i)] = v;
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      bf16[static_cast<size_t>(i)] = static_cast<uint16_t>(bits >> 16);
      f16[static_cast<size_t>(i)] = float_to_half(v);
    }
  }

  static uint16_t float_to_half(float v) {  // small normal values only: enough for test data
    uint32_t b;
    std::memcpy(&b, &v, 4);
    const uint32_t sign = (b >> 16) & 0x8000u;
    const int exponent = static_cast<int>((b >> 23) & 0xFF) - 127 + 15;
    if (exponent <= 0) return static_cast<uint16_t>(sign);
    return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exponent) << 10) | ((b >> 13) & 0x3FF));
  }

  const void* pointer(ElementType type) const {
    return type == ElementType::kFloat32 ? static_cast<const void*>(f32.data())
           : type == ElementType::kFloat16 ? static_cast<const void*>(f16.data()) : static_cast<const void*>(bf16.data());
  }
};

const TestData& data() {
  static const TestData d;
  return d;
}

int64_t element_bytes(ElementType t) { return t == ElementType::kFloat32 ? 4 : 2; }
const char* dtype_name(ElementType t) { return t == ElementType::kFloat32 ? "f32" : t == ElementType::kFloat16 ? "f16" : "bf16"; }

struct Outputs {
  std::vector<uint8_t> packed;
  std::vector<float> scales, zero_points;
  Outputs(int64_t numel, int bits, int64_t groups)
      : packed(static_cast<size_t>((numel * bits + 7) / 8)), scales(static_cast<size_t>(groups)), zero_points(static_cast<size_t>(groups)) {}
};

void quantize(benchmark::State& state, const KernelTable* table, ElementType type, int bits, int group, Method method) {
  QuantizeJob job;
  job.weights = data().pointer(type);
  job.element_type = type;
  job.geometry = GroupGeometry{kRows, kCols, group};
  job.bits = bits;
  job.method = method;
  Outputs out(kElements, bits, job.geometry.num_groups());
  job.packed = out.packed.data();
  job.scales = out.scales.data();
  job.zero_points = out.zero_points.data();
  for (auto _ : state) {
    benchmark::DoNotOptimize(table->quantize_groups(job, 0, job.geometry.num_groups(), nullptr));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kElements);
  state.SetBytesProcessed(state.iterations() * kElements * element_bytes(type));
}

void dequantize(benchmark::State& state, const KernelTable* table, int bits, int group) {
  QuantizeJob q;
  q.weights = data().f32.data();
  q.geometry = GroupGeometry{kRows, kCols, group};
  q.bits = bits;
  Outputs out(kElements, bits, q.geometry.num_groups());
  q.packed = out.packed.data();
  q.scales = out.scales.data();
  q.zero_points = out.zero_points.data();
  table->quantize_groups(q, 0, q.geometry.num_groups(), nullptr);
  std::vector<float> decoded(kElements);
  DequantizeJob job{out.packed.data(), out.scales.data(), out.zero_points.data(), q.geometry, bits, decoded.data()};
  for (auto _ : state) {
    table->dequantize_groups(job, 0, q.geometry.num_groups());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kElements);
  state.SetBytesProcessed(state.iterations() * kElements * 4);  // bytes written
}

void pack(benchmark::State& state, const KernelTable* table, int bits, bool unpack) {
  std::vector<uint8_t> codes(kElements), packed(static_cast<size_t>(kElements * bits / 8));
  for (int64_t i = 0; i < kElements; ++i) codes[static_cast<size_t>(i)] = static_cast<uint8_t>(i % (1 << bits));
  table->pack_codes(codes.data(), kElements, bits, packed.data());
  for (auto _ : state) {
    if (unpack) {
      table->unpack_codes(packed.data(), kElements, bits, codes.data());
    } else {
      table->pack_codes(codes.data(), kElements, bits, packed.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kElements);
  state.SetBytesProcessed(state.iterations() * kElements);  // code bytes
}

void min_max(benchmark::State& state, const KernelTable* table) {
  float lo = 0, hi = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(table->min_max(data().f32.data(), kElements, &lo, &hi));
  }
  state.SetItemsProcessed(state.iterations() * kElements);
  state.SetBytesProcessed(state.iterations() * kElements * 4);
}

namespace gguf = arrowquant::kernels::gguf;
enum class KquantCodec { kGgml, kFast, kSearch, kDecode };

// One k-quant block type's encoder or decoder over the whole tensor (1 M weights = 4096 blocks).
void kquant(benchmark::State& state, const gguf::TypeTraits* type, Isa isa, KquantCodec codec) {
  std::vector<uint8_t> encoded(static_cast<size_t>(gguf::encoded_bytes(*type, kElements)));
  std::vector<float> decoded(kElements);
  gguf::ggml_encoder(*type, isa)(data().f32.data(), kElements, encoded.data());
  const gguf::EncodeFn encode = codec == KquantCodec::kFast     ? gguf::fast_encoder(*type, isa)
                                : codec == KquantCodec::kSearch ? gguf::search_encoder(*type, isa)
                                                                : gguf::ggml_encoder(*type, isa);
  const gguf::DecodeFn decode = gguf::decoder(*type, isa);
  for (auto _ : state) {
    if (codec == KquantCodec::kDecode) {
      decode(encoded.data(), kElements, decoded.data());
    } else {
      encode(data().f32.data(), kElements, encoded.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kElements);
  state.SetBytesProcessed(state.iterations() * kElements * 4);  // float32 read or written
}

// Baselines over the same 4 MB: a copy, and a read that touches every byte (64-bit sums).
void baseline_memcpy(benchmark::State& state) {
  std::vector<float> dst(kElements);
  for (auto _ : state) {
    std::memcpy(dst.data(), data().f32.data(), kElements * 4);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * kElements);
  state.SetBytesProcessed(state.iterations() * kElements * 4);
}

void baseline_streaming_read(benchmark::State& state) {
  const auto* words = reinterpret_cast<const uint64_t*>(data().f32.data());
  for (auto _ : state) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (int64_t i = 0; i < kElements / 2; i += 4) {
      a += words[i];
      b += words[i + 1];
      c += words[i + 2];
      d += words[i + 3];
    }
    benchmark::DoNotOptimize(a + b + c + d);
  }
  state.SetItemsProcessed(state.iterations() * kElements);
  state.SetBytesProcessed(state.iterations() * kElements * 4);
}

void register_all() {
  benchmark::RegisterBenchmark("baseline/memcpy", baseline_memcpy);
  benchmark::RegisterBenchmark("baseline/streaming_read", baseline_streaming_read);
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    const KernelTable* table = arrowquant::kernels::kernels_for(isa);
    if (table == nullptr) continue;
    const std::string path = arrowquant::kernels::isa_name(isa);
    benchmark::RegisterBenchmark(("min_max/" + path).c_str(), min_max, table);
    for (int bits : {2, 4, 8}) {
      for (int group : {32, 64, 128, 256}) {
        for (ElementType type : {ElementType::kFloat32, ElementType::kFloat16, ElementType::kBFloat16}) {
          const std::string suffix = path + "/b" + std::to_string(bits) + "/g" + std::to_string(group) + "/" + dtype_name(type);
          benchmark::RegisterBenchmark(("quantize_rtn/" + suffix).c_str(), quantize, table, type, bits, group, Method::kRtn);
          benchmark::RegisterBenchmark(("quantize_search/" + suffix).c_str(), quantize, table, type, bits, group, Method::kSearch);
        }
        benchmark::RegisterBenchmark(("dequantize/" + path + "/b" + std::to_string(bits) + "/g" + std::to_string(group)).c_str(),
                                     dequantize, table, bits, group);
      }
      benchmark::RegisterBenchmark(("pack/" + path + "/b" + std::to_string(bits)).c_str(), pack, table, bits, false);
      benchmark::RegisterBenchmark(("unpack/" + path + "/b" + std::to_string(bits)).c_str(), pack, table, bits, true);
    }
    for (const char* name : {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0"}) {
      const gguf::TypeTraits* type = gguf::find_type(name);
      const std::string suffix = path + "/" + name;
      benchmark::RegisterBenchmark(("kquant_ggml/" + suffix).c_str(), kquant, type, isa, KquantCodec::kGgml);
      benchmark::RegisterBenchmark(("kquant_fast/" + suffix).c_str(), kquant, type, isa, KquantCodec::kFast);
      benchmark::RegisterBenchmark(("kquant_search/" + suffix).c_str(), kquant, type, isa, KquantCodec::kSearch);
      benchmark::RegisterBenchmark(("kquant_decode/" + suffix).c_str(), kquant, type, isa, KquantCodec::kDecode);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
