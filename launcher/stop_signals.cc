#include "launcher/stop_signals.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <thread>

#include "runtime/core/error.h"

namespace gptj {

namespace {

std::atomic<int> g_first_signal{0};
int g_pipe[2] = {-1, -1};  // the handler writes one byte per signal; the watcher reads them

std::mutex g_mutex;  // guards the three below; held while an action runs
std::function<void(int)> g_action;
bool g_acted = false;  // the first signal's action has run
std::string g_who;

// Async-signal-safe: an atomic compare-exchange and a write(2) to a non-blocking pipe.
void on_signal(int signal) {
  const int saved_errno = errno;
  int none = 0;
  g_first_signal.compare_exchange_strong(none, signal);
  const unsigned char byte = static_cast<unsigned char>(signal);
  [[maybe_unused]] const ssize_t n = ::write(g_pipe[1], &byte, 1);  // a full pipe drops a repeat: fine
  errno = saved_errno;
}

void run_action_locked() {
  if (g_acted || !g_action) return;
  g_acted = true;
  g_action(g_first_signal.load());
}

void watch() {
  for (bool first = true;; first = false) {
    unsigned char byte = 0;
    ssize_t n;
    do n = ::read(g_pipe[0], &byte, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) return;
    std::lock_guard lock(g_mutex);
    if (first) {
      run_action_locked();
    } else {
      std::fprintf(stderr, "%s: signal %d again: already stopping, ignored\n", g_who.c_str(), static_cast<int>(byte));
      std::fflush(stderr);
    }
  }
}

}  // namespace

void install_stop_signal_handler(const std::string& who) {
  static std::once_flag once;
  std::call_once(once, [&] {
    g_who = who;
    GPTJ_CHECK(::pipe2(g_pipe, O_CLOEXEC) == 0, "cannot create the stop-signal pipe: errno {}", errno);
    ::fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);  // the handler never blocks
    std::thread(watch).detach();  // blocked in read(2) for the life of the process
    struct sigaction action = {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    for (int signal : {SIGTERM, SIGINT})
      GPTJ_CHECK(::sigaction(signal, &action, nullptr) == 0, "cannot install the handler of signal {}", signal);
  });
}

int stop_signal_received() { return g_first_signal.load(); }

OnStopSignal::OnStopSignal(std::function<void(int)> action) {
  std::lock_guard lock(g_mutex);
  g_action = std::move(action);
  if (g_first_signal.load() != 0) run_action_locked();
}

OnStopSignal::~OnStopSignal() {
  std::lock_guard lock(g_mutex);
  g_action = nullptr;
}

}  // namespace gptj
