// trainer/stop_signal.cpp — see stop_signal.h.
#include "trainer/stop_signal.h"

#include <csignal>

namespace uio::trainer {
namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int sig) {
  if (g_stop) {  // asked twice: stop now
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop = 1;
}

}  // namespace

void install_stop_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}

bool stop_requested() { return g_stop != 0; }
void clear_stop_request() { g_stop = 0; }

}  // namespace uio::trainer
