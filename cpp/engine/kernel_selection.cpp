#include "engine/kernel_selection.h"

#include <atomic>
#include <cstdlib>

#include "kernels/cpu/cpu_features.h"

namespace arrowquant::engine {

namespace {

std::atomic<const kernels::KernelTable*> g_active{nullptr};
std::atomic<bool> g_forced{false};

}  // namespace

std::string select_kernels(const std::string& isa_name) {
  using kernels::Isa;
  if (isa_name.empty() || isa_name == "auto") {
    g_active.store(kernels::kernels_for(kernels::best_isa()));
    g_forced.store(false);
    return {};
  }
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (isa_name != kernels::isa_name(isa)) continue;
    const kernels::KernelTable* table = kernels::kernels_for(isa);
    if (table == nullptr) {
      return "SIMD path '" + isa_name + "' is not supported by this CPU (best available: " +
             kernels::isa_name(kernels::best_isa()) + ")";
    }
    g_active.store(table);
    g_forced.store(true);
    return {};
  }
  return "unknown SIMD path '" + isa_name + "'; expected one of: auto, scalar, avx2, avx512";
}

std::string select_kernels_from_environment() {
  const char* value = std::getenv(kIsaEnvVar);
  std::string error = select_kernels(value == nullptr ? "" : value);
  if (!error.empty()) error = std::string(kIsaEnvVar) + ": " + error;
  return error;
}

const kernels::KernelTable& active_kernels() {
  const kernels::KernelTable* table = g_active.load();
  return table != nullptr ? *table : *kernels::kernels_for(kernels::best_isa());
}

bool kernels_forced() { return g_forced.load(); }

kernels::Isa active_isa() {
  const kernels::KernelTable* active = &active_kernels();
  for (kernels::Isa isa : {kernels::Isa::kAvx512, kernels::Isa::kAvx2}) {
    if (kernels::kernels_for(isa) == active) return isa;
  }
  return kernels::Isa::kScalar;
}

}  // namespace arrowquant::engine
