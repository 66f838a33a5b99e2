// Which kernel table runs: the widest the CPU supports, unless ARROWQUANT_ISA forces one.
#pragma once

#include <string>

#include "kernels/quant/quant_kernels.h"

namespace arrowquant::engine {

inline constexpr const char* kIsaEnvVar = "ARROWQUANT_ISA";

// Reads ARROWQUANT_ISA (scalar | avx2 | avx512 | auto/empty) and selects the table. Returns an
// empty string on success, else a message naming the variable, the value and what is possible.
std::string select_kernels_from_environment();

// Selects an ISA by name; same error contract. Used by tests and benchmarks.
std::string select_kernels(const std::string& isa_name);

const kernels::KernelTable& active_kernels();
// The ISA of the active kernels (what GGUF encoders dispatch on, too).
kernels::Isa active_isa();
// Whether the active table was forced (by the variable or select_kernels) rather than automatic.
bool kernels_forced();

}  // namespace arrowquant::engine
