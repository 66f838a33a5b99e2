#include "engine/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace arrowquant::engine {

namespace {

// CPUs in this process's affinity mask (taskset, container cpusets, Ray workers pinned to cores).
int affinity_cpus() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// The cgroup CPU quota in whole CPUs, rounded up (docker --cpus, Kubernetes limits), or 0 if none.
// cgroup v2 "cpu.max" holds "QUOTA PERIOD" or "max PERIOD"; v1 has cfs_quota_us / cfs_period_us.
int cgroup_cpu_quota() {
  double quota = -1, period = 0;
  if (std::ifstream v2("/sys/fs/cgroup/cpu.max"); v2) {
    std::string q;
    if (v2 >> q >> period && q != "max") quota = std::strtod(q.c_str(), nullptr);
  } else {
    std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
    if (q1 && p1) q1 >> quota, p1 >> period;
  }
  if (quota <= 0 || period <= 0) return 0;
  return std::max(1, static_cast<int>(std::ceil(quota / period)));
}

}  // namespace

int hardware_threads() {
  // Threads beyond the CPUs the process may use only add contention.
  static const int n = [] {
    const int cpus = affinity_cpus();
    const int quota = cgroup_cpu_quota();
    return quota > 0 ? std::min(cpus, quota) : cpus;
  }();
  return n;
}

namespace {

class WorkerPool {
 public:
  explicit WorkerPool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker_loop(); });
  }

  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int workers() const { return static_cast<int>(threads_.size()); }

  // Returns false (having done nothing) if another job is running.
  bool try_run(int64_t num_tasks, int helpers, const std::function<void(int64_t)>& body) {
    std::unique_lock<std::mutex> busy(job_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      num_tasks_ = num_tasks;
      next_task_.store(0);
      helpers_wanted_ = helpers;
      helpers_active_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    run_tasks(body);
    // Wait until every helper that joined this job has left it, so `body` may be destroyed.
    std::unique_lock<std::mutex> lock(mutex_);
    helpers_wanted_ = 0;
    done_.wait(lock, [this] { return helpers_active_ == 0; });
    body_ = nullptr;
    return true;
  }

 private:
  void run_tasks(const std::function<void(int64_t)>& body) {
    for (int64_t t = next_task_.fetch_add(1); t < num_tasks_; t = next_task_.fetch_add(1)) body(t);
  }

  void worker_loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || (generation_ != seen && helpers_wanted_ > 0); });
      if (stopping_) return;
      seen = generation_;
      --helpers_wanted_;
      ++helpers_active_;
      const std::function<void(int64_t)>* body = body_;
      lock.unlock();
      run_tasks(*body);
      lock.lock();
      if (--helpers_active_ == 0) done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex job_mutex_;  // held by the caller for the whole job
  std::mutex mutex_;      // guards the fields below
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_task_{0};
  int helpers_wanted_ = 0;
  int helpers_active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

WorkerPool& pool() {
  // Leaked on purpose: joining threads during static destruction at interpreter exit can hang.
  static WorkerPool* instance = new WorkerPool(hardware_threads() - 1);
  return *instance;
}

}  // namespace

void parallel_for(int64_t num_tasks, int max_threads, const std::function<void(int64_t)>& body) {
  if (num_tasks <= 0) return;
  const int64_t helpers = std::min<int64_t>(std::max(max_threads, 1) - 1, num_tasks - 1);
  if (helpers > 0) {
    WorkerPool& p = pool();
    if (p.try_run(num_tasks, static_cast<int>(std::min<int64_t>(helpers, p.workers())), body)) return;
  }
  for (int64_t t = 0; t < num_tasks; ++t) body(t);
}

}  // namespace arrowquant::engine
