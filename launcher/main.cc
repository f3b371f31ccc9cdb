// gptj: one binary, every rank runs it (mpirun/srun start one rank per device).
// A failure anywhere prints "rank R on HOST: what happened" and ends the whole job, never a hang.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>

#include "launcher/commands.h"
#include "runtime/core/error.h"
#include "runtime/core/logging.h"

int main(int argc, char** argv) {
  std::unique_ptr<gptj::World> world;
  try {
    world = std::make_unique<gptj::World>(&argc, &argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gptj: %s\n", e.what());
    return 1;
  }
  CLI::App app{"gptj: GPT-J-6B inference, tensor-parallel across MPI ranks"};
  app.require_subcommand(1);
  std::string log_level = "warn";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();
  std::map<CLI::App*, gptj::CommandRunner> runners;
  for (auto* reg : {gptj::register_logits, gptj::register_generate, gptj::register_batch,
                    gptj::register_bench, gptj::register_make_random, gptj::register_tokenize,
                    gptj::register_detokenize, gptj::register_serve}) {
    gptj::CommandRunner runner = reg(app);
    runners[app.get_subcommands({}).back()] = runner;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = world->rank() == 0 ? app.exit(e) : (e.get_exit_code() == 0 ? 0 : 2);
    return code == 0 ? 0 : 2;
  }
  int code = 1;
  try {
    gptj::init_logging(world->rank(), log_level);
    gptj::configure_threads(*world);
    code = runners.at(app.get_subcommands().front())(*world);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d on %s: %s\n", world->rank(), world->host().c_str(), e.what());
    std::fflush(stderr);
    world->abort(1);
  }
  return code;
}
