// trainer/stop_signal.cpp — see stop_signal.h.
#include "trainer/stop_signal.h"

#include <csignal>
#include <ctime>

namespace uio::trainer {
namespace {

volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_first_s = 0;  // CLOCK_MONOTONIC second of the first request

// Seconds on the monotonic clock (clock_gettime is async-signal-safe).
long monotonic_s() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<long>(now.tv_sec);
}

void on_signal(int sig) {
  // One stop often arrives as several signals: GNU timeout signals the command and then its whole process
  // group, a scheduler each task of a step. A signal within the same couple of seconds as the first is that
  // same request; one that comes later is a person asking again, and ends the process at once.
  if (g_stop && monotonic_s() - g_first_s >= 2) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  if (!g_stop) g_first_s = static_cast<std::sig_atomic_t>(monotonic_s()), g_stop = 1;
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

bool stop_requested() { return g_stop != 0; }
void clear_stop_request() { g_stop = 0; }

}  // namespace uio::trainer
