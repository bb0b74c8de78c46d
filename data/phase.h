// data/phase.h — a named range of a training step (encode, transfer, decode, backward, optimizer) for
// PyTorch's profiler: `uio bench train --profile` (tools/step_profile.h) sums the device time of the
// kernels each range launched. When no profiler runs it costs one branch.
#pragma once

#include <ATen/record_function.h>

namespace uio::data {

class Phase {
 public:
  explicit Phase(const char* name) : guard_(at::RecordScope::USER_SCOPE) {
    if (guard_.isActive()) guard_.before(name);
  }
  Phase(const Phase&) = delete;
  Phase& operator=(const Phase&) = delete;
  void end() { guard_.end(); }  // before the scope does; the destructor then ends nothing

 private:
  at::RecordFunction guard_;  // ends the range when destroyed
};

}  // namespace uio::data
