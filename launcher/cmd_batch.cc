#include "launcher/commands.h"
namespace gptj {
CommandRunner register_batch(CLI::App& app) {
  app.add_subcommand("batch", "JSONL batch generation (not built yet)");
  return [](World&) { return 1; };
}
}  // namespace gptj
