// optim/optimizer.cpp — AdamW in two parameter groups, gradient clipping, and named checkpoint state.
#include "optim/optimizer.h"

#include <cmath>
#include <set>
#include <sstream>
#include <stdexcept>

namespace uio::optim {
namespace {

std::string shape_string(c10::IntArrayRef shape) {
  std::ostringstream s;
  s << shape;
  return s.str();
}

std::vector<std::pair<std::string, torch::Tensor>> checked_params(
    const std::vector<std::pair<std::string, torch::Tensor>>& named_params) {
  if (named_params.empty()) throw std::invalid_argument("optimizer: no trainable parameters");
  std::set<std::string> seen;
  for (const auto& [name, p] : named_params) {
    const std::string what = "optimizer: parameter '" + name + "'";
    if (name.empty()) throw std::invalid_argument("optimizer: a parameter has an empty name");
    if (!seen.insert(name).second) throw std::invalid_argument(what + " appears twice");
    if (!p.defined()) throw std::invalid_argument(what + " is an undefined tensor");
    if (!p.is_floating_point())
      throw std::invalid_argument(what + " has dtype " + std::string(c10::toString(p.scalar_type())) +
                                  ", expected a floating-point master weight (fp32)");
    if (!p.requires_grad())
      throw std::invalid_argument(what + " does not require grad; pass only trainable parameters");
  }
  return named_params;
}

// Two groups: decoupled weight decay for matrices (dim >= 2), none for vectors and scalars. Every group
// carries complete options, and the defaults equal the decay group's, so libtorch's inheritance of
// "unset" group fields from the defaults cannot change any value.
torch::optim::AdamW make_adamw(const std::vector<std::pair<std::string, torch::Tensor>>& params,
                               const OptimizerOptions& o) {
  auto adamw_options = [&](double weight_decay) {
    return torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(weight_decay);
  };
  std::vector<torch::Tensor> decay, no_decay;
  for (const auto& [name, p] : params) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  std::vector<torch::optim::OptimizerParamGroup> groups;
  if (!decay.empty())
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(adamw_options(o.weight_decay)));
  if (!no_decay.empty())
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(adamw_options(0.0)));
  try {
    return torch::optim::AdamW(groups, adamw_options(o.weight_decay));
  } catch (const c10::Error& e) {
    throw std::invalid_argument(std::string("optimizer: ") + e.what_without_backtrace());
  }
}

}  // namespace

Optimizer::Optimizer(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                     const OptimizerOptions& options)
    : options_(options), params_(checked_params(named_params)), adamw_(make_adamw(params_, options)) {}

double Optimizer::grad_norm() const {
  std::vector<torch::Tensor> norms;  // one float64 scalar per gradient, on the first gradient's device
  for (const auto& [name, p] : params_) {
    if (!p.grad().defined()) continue;
    auto norm = torch::linalg_vector_norm(p.grad(), 2, std::nullopt, false, torch::kDouble);
    norms.push_back(norms.empty() ? norm : norm.to(norms.front().device()));
  }
  if (norms.empty()) return 0.0;
  return torch::linalg_vector_norm(torch::stack(norms), 2).item<double>();
}

void Optimizer::step(double lr, double norm) {
  if (!std::isfinite(norm))
    throw std::invalid_argument("optimizer: gradient norm is " + std::to_string(norm) +
                                "; skip this step (a NaN/inf loss or gradient) instead of stepping");
  if (!std::isfinite(lr) || lr < 0)
    throw std::invalid_argument("optimizer: learning rate " + std::to_string(lr) + ", expected finite and >= 0");
  torch::NoGradGuard no_grad;
  if (options_.grad_clip > 0) {
    const double scale = std::min(1.0, options_.grad_clip / (norm + 1e-6));
    if (scale < 1.0)
      for (auto& [name, p] : params_)
        if (p.grad().defined()) p.mutable_grad().mul_(scale);
  }
  for (auto& group : adamw_.param_groups()) group.options().set_lr(lr);
  adamw_.step();
  ++steps_;
}

void Optimizer::zero_grad() { adamw_.zero_grad(/*set_to_none=*/true); }

int64_t Optimizer::steps() const { return steps_; }

const OptimizerOptions& Optimizer::options() const { return options_; }

std::map<std::string, torch::Tensor> Optimizer::state() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, p] : params_) {
    auto it = adamw_.state().find(p.unsafeGetTensorImpl());
    if (it == adamw_.state().end()) continue;
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    out[name + ".exp_avg"] = s.exp_avg().detach().clone();
    out[name + ".exp_avg_sq"] = s.exp_avg_sq().detach().clone();
    out[name + ".step"] = torch::tensor(s.step(), torch::kLong);
  }
  return out;
}

void Optimizer::load_state(const std::map<std::string, torch::Tensor>& state, int64_t steps) {
  auto fail = [](const std::string& key, const std::string& message) {
    throw std::runtime_error("optimizer state: '" + key + "' " + message);
  };
  if (steps < 0) fail("steps", "is " + std::to_string(steps) + ", expected >= 0");
  std::set<std::string> known;
  for (const auto& [name, p] : params_)
    for (const char* suffix : {".exp_avg", ".exp_avg_sq", ".step"}) known.insert(name + suffix);
  for (const auto& [key, t] : state)
    if (!known.count(key))
      fail(key,
           "belongs to no trainable parameter (expected NAME.exp_avg, NAME.exp_avg_sq, NAME.step for "
           "the optimiser's " +
               std::to_string(params_.size()) + " parameters)");

  // Check everything first, then replace the state, so a bad map changes nothing.
  ska::flat_hash_map<void*, std::unique_ptr<torch::optim::OptimizerParamState>> loaded;
  for (const auto& [name, p] : params_) {
    const std::string keys[3] = {name + ".exp_avg", name + ".exp_avg_sq", name + ".step"};
    const int present = int(state.count(keys[0]) + state.count(keys[1]) + state.count(keys[2]));
    if (present == 0) continue;
    for (const auto& key : keys)
      if (!state.count(key))
        fail(key, "is missing, while parameter '" + name + "' has other state (expected all three keys or none)");
    auto moment = [&](const std::string& key) {
      const auto& t = state.at(key);
      if (!t.defined()) fail(key, "is an undefined tensor");
      if (t.sizes() != p.sizes())
        fail(key,
             "has shape " + shape_string(t.sizes()) + ", parameter '" + name + "' expects " + shape_string(p.sizes()));
      if (t.scalar_type() != p.scalar_type())
        fail(key, "has dtype " + std::string(c10::toString(t.scalar_type())) + ", parameter '" + name + "' expects " +
                      c10::toString(p.scalar_type()));
      return t.to(p.device(), p.scalar_type(), /*non_blocking=*/false, /*copy=*/true).contiguous();
    };
    const auto& step = state.at(keys[2]);
    if (!step.defined() || step.dim() != 0 || step.scalar_type() != torch::kLong)
      fail(keys[2],
           "must be a 0-dim int64 tensor, got " +
               (step.defined() ? std::string(c10::toString(step.scalar_type())) + " " + shape_string(step.sizes())
                               : std::string("an undefined tensor")));
    const int64_t param_steps = step.item<int64_t>();
    if (param_steps < 1 || param_steps > steps)
      fail(keys[2], "is " + std::to_string(param_steps) + ", expected 1.." + std::to_string(steps) +
                        " (at least one step, at most the optimiser's)");
    auto s = std::make_unique<torch::optim::AdamWParamState>();
    s->step(param_steps);
    s->exp_avg(moment(keys[0]));
    s->exp_avg_sq(moment(keys[1]));
    loaded[p.unsafeGetTensorImpl()] = std::move(s);
  }
  adamw_.state() = std::move(loaded);
  steps_ = steps;
}

}  // namespace uio::optim
