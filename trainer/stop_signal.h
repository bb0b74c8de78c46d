// trainer/stop_signal.h — a clean stop on SIGINT/SIGTERM: the first signal asks the training loop to
// finish its step, write a checkpoint and return; a second one, two seconds or more after the first, ends
// the process at once (the default action). Signals closer together are one request (`timeout` and
// schedulers deliver one stop as several signals). The flag is process-wide because signals are; only the
// loop reads it.
#pragma once

namespace uio::trainer {

void install_stop_handlers();  // SIGINT and SIGTERM; safe to call more than once
bool stop_requested();
void clear_stop_request();  // tests

}  // namespace uio::trainer
