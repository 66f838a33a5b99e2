#include "engine/kquant_engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "engine/kernel_selection.h"
#include "engine/thread_pool.h"
#include "kernels/common/float16.h"
#include "kernels/gguf/gguf_simd.h"
#include "kernels/rotation/rotation_kernels.h"

namespace arrowquant::engine {

namespace {

namespace gguf = kernels::gguf;

// Super-blocks per task: 64 Ki values, enough to amortise a task and to fill every SIMD lane.
constexpr int64_t kChunkBlocks = 256;
constexpr int64_t kMinValuesForThreads = 1 << 16;

// A run of super-blocks of one job, numbered row by row over the padded rows.
struct Chunk {
  int64_t job;
  int64_t first_block;
  int64_t blocks;
};

template <typename Job>
std::vector<Chunk> plan_chunks(std::span<const Job> jobs, int64_t* total_values) {
  std::vector<Chunk> chunks;
  *total_values = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const int64_t n = jobs[j].rows * (kquant_padded_cols(jobs[j].cols) / kKquantBlock);
    *total_values += n * kKquantBlock;
    for (int64_t b = 0; b < n; b += kChunkBlocks) chunks.push_back({static_cast<int64_t>(j), b, std::min(kChunkBlocks, n - b)});
  }
  return chunks;
}

int threads_for(int requested, int64_t total) {
  if (total < kMinValuesForThreads) return 1;
  return requested <= 0 ? hardware_threads() : requested;
}

float element_as_float(const void* weights, kernels::ElementType type, int64_t i) {
  switch (type) {
    case kernels::ElementType::kFloat16: return kernels::baseline::half_to_float(static_cast<const uint16_t*>(weights)[i]);
    case kernels::ElementType::kBFloat16: return kernels::baseline::bfloat16_to_float(static_cast<const uint16_t*>(weights)[i]);
    default: return static_cast<const float*>(weights)[i];
  }
}

// Where super-block `block` of a tensor with `cols` columns starts: (row, column).
struct BlockPlace {
  int64_t row, col;
};
BlockPlace place_of(int64_t block, int64_t cols) {
  const int64_t per_row = kquant_padded_cols(cols) / kKquantBlock;
  return {block / per_row, block % per_row * kKquantBlock};
}

// How many of a block's values lie inside its row (a row's last block may be padding in part).
int64_t values_in_row(const BlockPlace& at, int64_t cols) { return std::clamp<int64_t>(cols - at.col, 0, kKquantBlock); }

// The index of the first non-finite value among n, or -1; `kernels` checks them vectorised and
// only a failing range is searched element by element.
int64_t first_non_finite(const float* x, int64_t n, const kernels::KernelTable& kernels) {
  float lo = 0.0f, hi = 0.0f;
  if (n == 0 || kernels.min_max(x, n, &lo, &hi)) return -1;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return i;
  }
  return -1;
}

// When the job's rows are whole super-blocks of float32, a chunk is a contiguous run of the input,
// used in place (no gathering copy): its start, else nullptr.
const float* contiguous_source(const KquantEncodeJob& job, const Chunk& c) {
  if (job.element_type != kernels::ElementType::kFloat32 || job.cols % kKquantBlock != 0) return nullptr;
  return static_cast<const float*>(job.weights) + c.first_block * kKquantBlock;
}

// Gathers the chunk's values as float32 (zeros past the end of each row) into `values`; returns
// the flattened index of the first non-finite value, or -1. `kernels` checks finiteness a block
// at a time (vectorised); only a block that fails is searched element by element.
int64_t gather(const KquantEncodeJob& job, const Chunk& c, const kernels::KernelTable& kernels, float* values) {
  for (int64_t b = 0; b < c.blocks; ++b) {
    const BlockPlace at = place_of(c.first_block + b, job.cols);
    const int64_t present = values_in_row(at, job.cols);
    const int64_t base = at.row * job.cols + at.col;
    float* dst = values + b * kKquantBlock;
    if (job.element_type == kernels::ElementType::kFloat32) {
      std::memcpy(dst, static_cast<const float*>(job.weights) + base, static_cast<size_t>(present) * sizeof(float));
    } else {
      for (int64_t i = 0; i < present; ++i) dst[i] = element_as_float(job.weights, job.element_type, base + i);
    }
    if (const int64_t bad = first_non_finite(dst, present, kernels); bad >= 0) return base + bad;
    std::fill(dst + present, dst + kKquantBlock, 0.0f);
  }
  return -1;
}

// Moves the values of a chunk's blocks that lie inside their rows to the front of `values`,
// dropping the padding of each row's last block; returns how many there are.
int64_t drop_padding(const Chunk& c, int64_t cols, float* values) {
  if (cols % kKquantBlock == 0) return c.blocks * kKquantBlock;
  int64_t kept = 0;
  for (int64_t b = 0; b < c.blocks; ++b) {
    const BlockPlace at = place_of(c.first_block + b, cols);
    const int64_t present = values_in_row(at, cols);
    std::memmove(values + kept, values + b * kKquantBlock, static_cast<size_t>(present) * sizeof(float));
    kept += present;
  }
  return kept;
}

// Writes decoded (already unrotated) blocks to their rows, dropping the padding.
void scatter(const float* values, const Chunk& c, int64_t cols, float* out) {
  for (int64_t b = 0; b < c.blocks; ++b) {
    const BlockPlace at = place_of(c.first_block + b, cols);
    const int64_t present = values_in_row(at, cols);
    std::memcpy(out + at.row * cols + at.col, values + b * kKquantBlock, static_cast<size_t>(present) * sizeof(float));
  }
}

}  // namespace

const gguf::TypeTraits* kquant_type(int bits) {
  switch (bits) {
    case 2: return gguf::find_type(static_cast<int32_t>(gguf::GgmlType::kQ2_K));
    case 3: return gguf::find_type(static_cast<int32_t>(gguf::GgmlType::kQ3_K));
    case 4: return gguf::find_type(static_cast<int32_t>(gguf::GgmlType::kQ4_K));
    case 5: return gguf::find_type(static_cast<int32_t>(gguf::GgmlType::kQ5_K));
    case 6: return gguf::find_type(static_cast<int32_t>(gguf::GgmlType::kQ6_K));
    case 8: return gguf::find_type(static_cast<int32_t>(gguf::GgmlType::kQ8_0));
    default: return nullptr;
  }
}

int64_t kquant_encoded_bytes(const gguf::TypeTraits& type, int64_t rows, int64_t cols) {
  return gguf::encoded_bytes(type, rows * kquant_padded_cols(cols));
}

std::optional<NonFiniteValue> kquant_encode(std::span<const KquantEncodeJob> jobs, int num_threads,
                                            std::vector<kernels::ErrorStats>* error_stats) {
  int64_t total = 0;
  const std::vector<Chunk> chunks = plan_chunks(jobs, &total);
  std::atomic<int64_t> first_bad_chunk{static_cast<int64_t>(chunks.size())};
  std::vector<int64_t> bad_index(chunks.size(), -1);
  std::vector<kernels::ErrorStats> chunk_stats(error_stats ? chunks.size() : 0);
  const kernels::Isa isa = active_isa();
  const kernels::KernelTable& kernels = active_kernels();
  const kernels::rotation::RotationKernels rotation = kernels::rotation::rotation_kernels(isa);
  parallel_for(static_cast<int64_t>(chunks.size()), threads_for(num_threads, total), [&](int64_t t) {
    thread_local std::vector<float> values, original, decoded;
    const Chunk& c = chunks[static_cast<size_t>(t)];
    const KquantEncodeJob& job = jobs[static_cast<size_t>(c.job)];
    const int64_t n = c.blocks * kKquantBlock;
    const float* source = contiguous_source(job, c);
    if (!source) values.resize(static_cast<size_t>(n));
    int64_t bad = -1;
    if (!source) {
      bad = gather(job, c, kernels, values.data());
    } else if (bad = first_non_finite(source, n, kernels); bad >= 0) {
      bad += c.first_block * kKquantBlock;  // a flattened index: rows are whole blocks here
    }
    if (bad >= 0) {
      bad_index[static_cast<size_t>(t)] = bad;
      int64_t seen = first_bad_chunk.load();
      while (t < seen && !first_bad_chunk.compare_exchange_weak(seen, t)) {
      }
      return;
    }
    // The values compared with the decoded ones: the input itself when used in place.
    if (error_stats && !source) original.assign(values.begin(), values.end());
    const float* to_encode = source;
    if (job.rotate || !source) {
      if (source) values.assign(source, source + n);
      if (job.rotate) rotation.forward(values.data(), c.blocks);
      to_encode = values.data();
    }
    uint8_t* out = job.out + gguf::encoded_bytes(*job.type, c.first_block * kKquantBlock);
    const gguf::EncodeFn encode = job.search ? gguf::search_encoder(*job.type, isa) : gguf::fast_encoder(*job.type, isa);
    encode(to_encode, n, out);
    if (!error_stats) return;
    decoded.resize(static_cast<size_t>(n));
    gguf::decoder(*job.type, isa)(out, n, decoded.data());
    if (job.rotate) rotation.inverse(decoded.data(), c.blocks);
    if (source) {
      chunk_stats[static_cast<size_t>(t)] = kernels.compare_values(source, decoded.data(), n);
      return;
    }
    const int64_t kept = drop_padding(c, job.cols, original.data());
    drop_padding(c, job.cols, decoded.data());
    chunk_stats[static_cast<size_t>(t)] = kernels.compare_values(original.data(), decoded.data(), kept);
  });
  const int64_t bad = first_bad_chunk.load();
  if (bad < static_cast<int64_t>(chunks.size())) {
    return NonFiniteValue{chunks[static_cast<size_t>(bad)].job, bad_index[static_cast<size_t>(bad)]};
  }
  if (error_stats) {
    // Merged in chunk order, so the sums are the same for every thread count.
    error_stats->assign(jobs.size(), kernels::ErrorStats{});
    for (size_t i = 0; i < chunks.size(); ++i) (*error_stats)[static_cast<size_t>(chunks[i].job)].merge(chunk_stats[i]);
  }
  return std::nullopt;
}

void kquant_decode(std::span<const KquantDecodeJob> jobs, int num_threads) {
  int64_t total = 0;
  const std::vector<Chunk> chunks = plan_chunks(jobs, &total);
  const kernels::Isa isa = active_isa();
  const kernels::rotation::RotationKernels rotation = kernels::rotation::rotation_kernels(isa);
  parallel_for(static_cast<int64_t>(chunks.size()), threads_for(num_threads, total), [&](int64_t t) {
    thread_local std::vector<float> values;
    const Chunk& c = chunks[static_cast<size_t>(t)];
    const KquantDecodeJob& job = jobs[static_cast<size_t>(c.job)];
    const gguf::DecodeFn decode = gguf::decoder(*job.type, isa);
    // Blocks that lie whole inside their row decode straight into the output, a few at a time so
    // that the rotation reads them back from L1; the rest (a row's padded last block) go through
    // a buffer that drops the padding.
    constexpr int64_t kStep = 8;
    int64_t b = 0;
    while (b < c.blocks) {
      const BlockPlace at = place_of(c.first_block + b, job.cols);
      int64_t whole = std::min(kStep, c.blocks - b);
      whole = std::min(whole, job.cols / kKquantBlock - at.col / kKquantBlock);  // whole blocks left in this row
      const uint8_t* in = job.encoded + gguf::encoded_bytes(*job.type, (c.first_block + b) * kKquantBlock);
      if (whole > 0) {
        float* out = job.out + at.row * job.cols + at.col;
        decode(in, whole * kKquantBlock, out);
        if (job.rotate) rotation.inverse(out, whole);
        b += whole;
        continue;
      }
      values.resize(kKquantBlock);
      decode(in, kKquantBlock, values.data());
      if (job.rotate) rotation.inverse(values.data(), 1);
      scatter(values.data(), Chunk{c.job, c.first_block + b, 1}, job.cols, job.out);
      b += 1;
    }
  });
}

}  // namespace arrowquant::engine
