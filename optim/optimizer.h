// optim/optimizer.h — the optimiser of the memory compressor's trainable parameters: AdamW in two groups,
// global gradient-norm clipping, an undo point for a step that must be taken back, and its state as
// named tensors for checkpoints. The update runs in libtorch's multi-tensor kernels (`_fused_adamw_`,
// `_foreach_norm`, `_foreach_mul_`, `_foreach_copy_`: a few launches for all parameters, the kernels
// torch.optim.AdamW(fused=True) runs), or parameter by parameter in plain tensor ops (the rule of
// torch::optim::AdamW) as the reference. The learning rate per step comes from optim/schedule.h; the
// loop that calls step() and writes checkpoints belongs to the trainer.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace uio::optim {

struct OptimizerOptions {
  double lr = 1e-4;  // peak learning rate (the schedule scales it per step)
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;  // decoupled (AdamW); applied to the decay group only
  double grad_clip = 1.0;  // max global L2 norm of the gradients; <= 0: no clipping
  // Multi-tensor kernels (a handful of launches per step for all parameters) or one parameter at a time
  // (the reference: a dozen small ops per parameter, hundreds of launches for a model's adapters).
  bool fused = true;
};

// AdamW over named trainable parameters in two groups: weight decay for tensors of dim >= 2 (LoRA A and
// B), none for dim < 2 (the <mem> embedding, biases). Parameters are fp32 master weights; the state
// (exp_avg, exp_avg_sq) has their dtype and device. A parameter whose .grad is undefined at a step is
// skipped by that step entirely (no decay, no state change), as in PyTorch.
class Optimizer {
 public:
  // Throws std::invalid_argument for an empty list, a duplicate or empty name, an undefined or
  // non-floating-point tensor, a tensor that does not require grad, or options AdamW rejects.
  Optimizer(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, const OptimizerOptions& options);

  // Global L2 norm of all gradients, accumulated in float64 (parameters without .grad count zero).
  // One host sync.
  double grad_norm() const;
  // Whether every parameter is finite (no NaN or infinity). One host sync.
  bool parameters_finite() const;
  // Scales gradients by min(1, grad_clip / (norm + 1e-6)) when clipping is on (the rule of PyTorch's
  // clip_grad_norm_; norm from grad_norm()), sets every group's lr to `lr`, and takes one AdamW step.
  // Throws std::invalid_argument (changing nothing) if norm is not finite or lr is negative or not finite.
  void step(double lr, double norm);
  void zero_grad();  // sets grads to undefined (set_to_none)
  int64_t steps() const;  // steps taken (restored by load_state)

  // Checkpoint state, copies: for each parameter NAME that has state (had a gradient at some step),
  // "NAME.exp_avg", "NAME.exp_avg_sq" (its shape and dtype) and "NAME.step" (a 0-dim int64 tensor: the
  // AdamW steps this parameter took, which drive its bias correction; equal to steps() unless it
  // missed a gradient). load_state replaces all state with `state`: every key must belong to a
  // parameter, each parameter has all three keys or none (none: fresh state), shapes and dtypes match
  // the parameter, and 1 <= NAME.step <= steps. A violation throws std::runtime_error naming the key,
  // what was found and what was expected, and changes nothing. Tensors are copied to the parameter's
  // device, so the map may be read-only CPU memory (a mapped safetensors file).
  std::map<std::string, torch::Tensor> state() const;
  void load_state(const std::map<std::string, torch::Tensor>& state, int64_t steps);

  // An undo point: remember() copies the parameters and the whole optimiser state into buffers kept
  // between steps (no allocation after the first call, a few launches); restore() puts them back, so a
  // step that failed or diverged after remember() leaves nothing behind (a parameter that got its first
  // state since then has none again). restore() without remember() throws std::logic_error.
  void remember();
  void restore();

  const OptimizerOptions& options() const;

 private:
  struct State {  // one parameter's; exp_avg undefined: none yet
    torch::Tensor exp_avg, exp_avg_sq;
    torch::Tensor step;  // float32 0-dim on the parameter's device: what the fused kernel reads
    int64_t steps = 0;  // the same count on the host
  };
  void update_reference(double lr);
  void update_fused(double lr);

  OptimizerOptions options_;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<bool> decay_;  // parameter i is in the weight-decay group (dim >= 2)
  std::vector<State> state_;
  int64_t steps_ = 0;
  struct Saved {
    std::vector<torch::Tensor> params, exp_avg, exp_avg_sq;  // buffers, reused
    std::vector<State> state;  // what state_ held (tensors are the buffers' views, or undefined)
    int64_t steps = 0;
    bool valid = false;
  } saved_;
};

}  // namespace uio::optim
