#include "engine/gguf_engine.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "engine/kernel_selection.h"
#include "engine/thread_pool.h"
#include "kernels/gguf/gguf_simd.h"
#include "kernels/common/float16.h"

namespace arrowquant::engine {

namespace {

// Elements per task: a multiple of every block size (256), large enough to amortise a task,
// small enough to spread one big tensor over every thread.
constexpr int64_t kChunkElements = 64 * 1024;
constexpr int64_t kMinElementsForThreads = 1 << 16;

struct Chunk {
  int64_t job;
  int64_t begin;  // element offset in the job
  int64_t count;
};

// Elements per chunk: kChunkElements, or whole rows for an importance-weighted encode (ggml's
// weighted legacy quantizers take statistics over the whole row).
int64_t chunk_step(const GgufEncodeJob& job) {
  return job.importance ? std::max<int64_t>(1, kChunkElements / job.n_per_row) * job.n_per_row : kChunkElements;
}
int64_t chunk_step(const GgufDecodeJob&) { return kChunkElements; }

template <typename Job>
std::vector<Chunk> plan_chunks(std::span<const Job> jobs, int64_t* total) {
  std::vector<Chunk> chunks;
  *total = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const int64_t n = jobs[j].numel;
    const int64_t step = chunk_step(jobs[j]);
    *total += n;
    for (int64_t begin = 0; begin < n; begin += step) {
      chunks.push_back({static_cast<int64_t>(j), begin, std::min(step, n - begin)});
    }
  }
  return chunks;
}

int threads_for(int requested, int64_t total) {
  if (total < kMinElementsForThreads) return 1;
  return requested <= 0 ? hardware_threads() : requested;
}

// The chunk as float32: the input itself, or widened into `buffer`.
const float* chunk_as_f32(const GgufEncodeJob& job, const Chunk& c, std::vector<float>& buffer) {
  if (job.element_type == kernels::ElementType::kFloat32) return static_cast<const float*>(job.weights) + c.begin;
  buffer.resize(static_cast<size_t>(c.count));
  const auto* src = static_cast<const uint16_t*>(job.weights) + c.begin;
  if (job.element_type == kernels::ElementType::kFloat16) {
    for (int64_t i = 0; i < c.count; ++i) buffer[static_cast<size_t>(i)] = kernels::baseline::half_to_float(src[i]);
  } else {
    for (int64_t i = 0; i < c.count; ++i) buffer[static_cast<size_t>(i)] = kernels::baseline::bfloat16_to_float(src[i]);
  }
  return buffer.data();
}

}  // namespace

std::optional<NonFiniteValue> gguf_encode(std::span<const GgufEncodeJob> jobs, int num_threads) {
  int64_t total = 0;
  const std::vector<Chunk> chunks = plan_chunks(jobs, &total);
  // The first non-finite value, as (job, index) packed for an atomic minimum.
  std::atomic<int64_t> first_bad_chunk{static_cast<int64_t>(chunks.size())};
  std::vector<int64_t> bad_index(chunks.size(), -1);
  const kernels::Isa isa = active_isa();
  parallel_for(static_cast<int64_t>(chunks.size()), threads_for(num_threads, total), [&](int64_t t) {
    thread_local std::vector<float> buffer;
    const Chunk& c = chunks[static_cast<size_t>(t)];
    const GgufEncodeJob& job = jobs[static_cast<size_t>(c.job)];
    const float* x = chunk_as_f32(job, c, buffer);
    for (int64_t i = 0; i < c.count; ++i) {
      if (!std::isfinite(x[i])) {
        bad_index[static_cast<size_t>(t)] = c.begin + i;
        int64_t seen = first_bad_chunk.load();
        while (t < seen && !first_bad_chunk.compare_exchange_weak(seen, t)) {
        }
        return;
      }
    }
    uint8_t* out = job.out + kernels::gguf::encoded_bytes(*job.type, c.begin);
    if (job.importance) {
      for (int64_t row = 0; row < c.count; row += job.n_per_row) {
        job.type->encode_imatrix(x + row, job.n_per_row, out + kernels::gguf::encoded_bytes(*job.type, row),
                                 job.importance);
      }
      return;
    }
    const kernels::gguf::EncodeFn encode = job.search ? kernels::gguf::search_encoder(*job.type, isa) : kernels::gguf::ggml_encoder(*job.type, isa);
    encode(x, c.count, out);
  });
  const int64_t bad = first_bad_chunk.load();
  if (bad < static_cast<int64_t>(chunks.size())) {
    return NonFiniteValue{chunks[static_cast<size_t>(bad)].job, bad_index[static_cast<size_t>(bad)]};
  }
  return std::nullopt;
}

void gguf_decode(std::span<const GgufDecodeJob> jobs, int num_threads) {
  int64_t total = 0;
  const std::vector<Chunk> chunks = plan_chunks(jobs, &total);
  const kernels::Isa isa = active_isa();
  parallel_for(static_cast<int64_t>(chunks.size()), threads_for(num_threads, total), [&](int64_t t) {
    const Chunk& c = chunks[static_cast<size_t>(t)];
    const GgufDecodeJob& job = jobs[static_cast<size_t>(c.job)];
    kernels::gguf::decoder(*job.type, isa)(job.encoded + kernels::gguf::encoded_bytes(*job.type, c.begin), c.count, job.out + c.begin);
  });
}

}  // namespace arrowquant::engine
