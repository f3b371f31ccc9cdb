// spdlog set-up: every line carries the rank ("[r0]") so interleaved mpirun output stays readable.
// Logs go to stderr; stdout is for results only.
#pragma once
#include <spdlog/spdlog.h>

#include <string>

namespace gptj {

// Configures the default logger for this process. `level`: trace|debug|info|warn|error|off.
void init_logging(int rank, const std::string& level);

}  // namespace gptj
