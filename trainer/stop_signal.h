// trainer/stop_signal.h — a clean stop on SIGINT/SIGTERM: the first signal asks the training loop to
// finish its step, write a checkpoint and return; a second one ends the process at once (the default
// action). The flag is process-wide because signals are; only the loop reads it.
#pragma once

namespace uio::trainer {

void install_stop_handlers();  // SIGINT and SIGTERM; safe to call more than once
bool stop_requested();
void clear_stop_request();  // tests

}  // namespace uio::trainer
