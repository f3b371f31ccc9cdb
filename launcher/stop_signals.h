// SIGTERM/SIGINT as a stop request (gptj serve, every rank). The handler is installed with
// sigaction for the whole process, so it runs on whichever thread (MPI's, OpenMP's, HTTP's) the
// kernel picks, and it stays installed until the process exits: a repeated signal — Slurm and
// systemd signal every process of the job, mpirun sends its own after a delay, a user presses
// Ctrl-C twice — never meets the default disposition and never kills a draining or finishing
// process. The first signal runs the registered action once, on a watcher thread of this module;
// later ones are only reported on stderr.
#pragma once
#include <functional>
#include <string>

namespace gptj {

// Installs the handler for SIGTERM and SIGINT (once per process; later calls do nothing). `who`
// names the process in the stderr lines ("gptj serve").
void install_stop_signal_handler(const std::string& who);

// The first stop signal received (SIGTERM or SIGINT), 0 while none has come.
int stop_signal_received();

// While it lives, the first stop signal runs `action(signal)` on the watcher thread — at once, on
// the constructing thread, when that signal came before. The destructor waits for an action in
// progress, so the action may use objects that outlive this guard.
class OnStopSignal {
 public:
  explicit OnStopSignal(std::function<void(int)> action);
  ~OnStopSignal();
  OnStopSignal(const OnStopSignal&) = delete;
  OnStopSignal& operator=(const OnStopSignal&) = delete;
};

}  // namespace gptj
