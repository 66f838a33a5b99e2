// A process-wide pool of worker threads for data-parallel loops.
#pragma once

#include <cstdint>
#include <functional>

namespace arrowquant::engine {

// Number of hardware threads (at least 1).
int hardware_threads();

// Runs body(task) for every task in [0, num_tasks) on up to max_threads threads (the caller
// included) and returns when all have finished. Tasks are handed out in increasing order.
// If the pool is already serving another call (e.g. a second Python thread), the caller runs its
// tasks alone: calls never wait on each other and never deadlock. body must not throw.
void parallel_for(int64_t num_tasks, int max_threads, const std::function<void(int64_t)>& body);

}  // namespace arrowquant::engine
