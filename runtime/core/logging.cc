#include "runtime/core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "runtime/core/error.h"

namespace gptj {

void init_logging(int rank, const std::string& level) {
  auto logger = spdlog::stderr_color_mt("gptj");
  logger->set_pattern(fmt::format("[%H:%M:%S.%e] [r{}] [%^%l%$] %v", rank));
  auto parsed = spdlog::level::from_str(level);
  GPTJ_CHECK(parsed != spdlog::level::off || level == "off", "unknown --log-level '{}'", level);
  logger->set_level(parsed);
  spdlog::set_default_logger(logger);
}

}  // namespace gptj
