// optim/optimizer.cpp — AdamW in two parameter groups, gradient clipping, and named checkpoint state.
#include "optim/optimizer.h"

#include <cmath>
#include <limits>
#include <tuple>
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

void check_options(const OptimizerOptions& o) {
  auto fail = [](const std::string& what, double value) {
    throw std::invalid_argument("optimizer: " + what + ", got " + std::to_string(value));
  };
  if (!(o.lr >= 0) || !std::isfinite(o.lr)) fail("lr must be finite and >= 0", o.lr);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) fail("beta1 must lie in [0, 1)", o.beta1);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) fail("beta2 must lie in [0, 1)", o.beta2);
  if (!(o.eps >= 0) || !std::isfinite(o.eps)) fail("eps must be finite and >= 0", o.eps);
  if (!(o.weight_decay >= 0) || !std::isfinite(o.weight_decay))
    fail("weight_decay must be finite and >= 0", o.weight_decay);
}

std::vector<torch::Tensor> defined_grads(const std::vector<std::pair<std::string, torch::Tensor>>& params) {
  std::vector<torch::Tensor> grads;
  for (const auto& [name, p] : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

}  // namespace

Optimizer::Optimizer(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                     const OptimizerOptions& options)
    : options_(options), params_(checked_params(named_params)), state_(params_.size()) {
  check_options(options_);
  // Two groups: decoupled weight decay for matrices (dim >= 2), none for vectors and scalars.
  for (const auto& [name, p] : params_) decay_.push_back(p.dim() >= 2);
}

double Optimizer::grad_norm() const {
  const auto grads = defined_grads(params_);
  if (grads.empty()) return 0.0;
  std::vector<torch::Tensor> norms;  // one float64 scalar per gradient, on the first gradient's device
  if (options_.fused) {
    norms = at::_foreach_norm(grads, 2, torch::kDouble);
    for (auto& n : norms)
      if (n.device() != grads.front().device()) n = n.to(grads.front().device());
  } else {
    for (const auto& g : grads)
      norms.push_back(torch::linalg_vector_norm(g, 2, std::nullopt, false, torch::kDouble).to(grads.front().device()));
  }
  return torch::linalg_vector_norm(torch::stack(norms), 2).item<double>();
}

bool Optimizer::parameters_finite() const {
  torch::NoGradGuard no_grad;  // (reading the parameters as they are: no detached copies to make)
  std::vector<torch::Tensor> params, finite;
  for (const auto& [name, p] : params_) params.push_back(p);
  if (options_.fused) {
    // The largest magnitude of each parameter: finite exactly when every entry is (NaN propagates).
    for (auto& m : at::_foreach_norm(params, std::numeric_limits<double>::infinity()))
      finite.push_back(m.device() == params.front().device() ? m : m.to(params.front().device()));
    return torch::stack(finite).isfinite().all().item<bool>();
  }
  for (const auto& p : params) finite.push_back(torch::isfinite(p).all().to(params.front().device()));
  return torch::stack(finite).all().item<bool>();
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
    if (scale < 1.0) {
      auto grads = defined_grads(params_);
      if (options_.fused && !grads.empty())
        at::_foreach_mul_(grads, scale);
      else
        for (auto& g : grads) g.mul_(scale);
    }
  }
  // State for parameters with their first gradient: zero moments (and a zero step count).
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    auto& s = state_[i];
    if (!p.grad().defined() || s.exp_avg.defined()) continue;
    s.exp_avg = torch::zeros_like(p, at::MemoryFormat::Preserve);
    s.exp_avg_sq = torch::zeros_like(p, at::MemoryFormat::Preserve);
    s.step = torch::zeros({}, p.options().dtype(torch::kFloat));
    s.steps = 0;
  }
  if (options_.fused)
    update_fused(lr);
  else
    update_reference(lr);
  ++steps_;
}

// torch::optim::AdamW's rule, one parameter at a time.
void Optimizer::update_reference(double lr) {
  const double beta1 = options_.beta1, beta2 = options_.beta2;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (!p.grad().defined()) continue;
    const auto& grad = p.grad();
    auto& s = state_[i];
    ++s.steps;  // (s.step, the fused kernel's copy, is not kept here: an optimiser runs one way)
    const double weight_decay = decay_[i] ? options_.weight_decay : 0.0;
    if (weight_decay != 0) p.mul_(1 - lr * weight_decay);
    s.exp_avg.mul_(beta1).add_(grad, 1 - beta1);
    s.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
    const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(s.steps));
    const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(s.steps));
    auto denom = (s.exp_avg_sq.sqrt() / std::sqrt(bias_correction2)).add_(options_.eps);
    p.addcdiv_(s.exp_avg, denom, -lr / bias_correction1);
  }
}

// One `_fused_adamw_` call per (group, device, dtype): every parameter of it in one kernel launch (CUDA)
// or one pass (CPU). The kernel reads each parameter's step count from a float32 tensor.
void Optimizer::update_fused(double lr) {
  std::map<std::tuple<bool, std::string, int>, std::vector<size_t>> calls;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    if (p.grad().defined()) calls[{decay_[i], p.device().str(), static_cast<int>(p.scalar_type())}].push_back(i);
  }
  for (const auto& [key, members] : calls) {
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    for (size_t i : members) {
      auto& s = state_[i];
      ++s.steps;
      params.push_back(params_[i].second), grads.push_back(params_[i].second.grad());
      exp_avgs.push_back(s.exp_avg), exp_avg_sqs.push_back(s.exp_avg_sq), steps.push_back(s.step);
    }
    at::_foreach_add_(steps, 1.0);
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, lr, options_.beta1,
                      options_.beta2, std::get<0>(key) ? options_.weight_decay : 0.0, options_.eps,
                      /*amsgrad=*/false, /*maximize=*/false);
  }
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : params_) p.mutable_grad().reset();
}

int64_t Optimizer::steps() const { return steps_; }

const OptimizerOptions& Optimizer::options() const { return options_; }

void Optimizer::remember() {
  torch::NoGradGuard no_grad;
  auto& b = saved_;
  if (b.params.empty())
    for (const auto& [name, p] : params_) b.params.push_back(torch::empty_like(p));
  b.exp_avg.resize(params_.size()), b.exp_avg_sq.resize(params_.size());
  std::vector<torch::Tensor> to, from;
  for (size_t i = 0; i < params_.size(); ++i) {
    to.push_back(b.params[i]), from.push_back(params_[i].second);
    const auto& s = state_[i];
    if (!s.exp_avg.defined()) continue;
    if (!b.exp_avg[i].defined())
      b.exp_avg[i] = torch::empty_like(s.exp_avg), b.exp_avg_sq[i] = torch::empty_like(s.exp_avg_sq);
    to.push_back(b.exp_avg[i]), from.push_back(s.exp_avg);
    to.push_back(b.exp_avg_sq[i]), from.push_back(s.exp_avg_sq);
  }
  if (options_.fused)
    at::_foreach_copy_(to, from);
  else
    for (size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  b.state.clear();
  for (const auto& s : state_) b.state.push_back({s.exp_avg.defined() ? s.exp_avg : torch::Tensor(), {}, {}, s.steps});
  b.steps = steps_;
  b.valid = true;
}

void Optimizer::restore() {
  if (!saved_.valid) throw std::logic_error("optimizer: restore() without an earlier remember()");
  torch::NoGradGuard no_grad;
  auto& b = saved_;
  std::vector<torch::Tensor> to, from;
  for (size_t i = 0; i < params_.size(); ++i) {
    to.push_back(params_[i].second), from.push_back(b.params[i]);
    auto& s = state_[i];
    if (!b.state[i].exp_avg.defined()) {  // no state at the undo point: none now either
      s = State{};
      continue;
    }
    to.push_back(s.exp_avg), from.push_back(b.exp_avg[i]);
    to.push_back(s.exp_avg_sq), from.push_back(b.exp_avg_sq[i]);
    s.steps = b.state[i].steps;
    if (options_.fused) s.step.fill_(static_cast<double>(s.steps));
  }
  if (options_.fused)
    at::_foreach_copy_(to, from);
  else
    for (size_t i = 0; i < to.size(); ++i) to[i].copy_(from[i]);
  steps_ = b.steps;
}

std::map<std::string, torch::Tensor> Optimizer::state() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& s = state_[i];
    if (!s.exp_avg.defined()) continue;
    const auto& name = params_[i].first;
    out[name + ".exp_avg"] = s.exp_avg.detach().clone();
    out[name + ".exp_avg_sq"] = s.exp_avg_sq.detach().clone();
    out[name + ".step"] = torch::tensor(s.steps, torch::kLong);
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
  std::vector<State> loaded(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto& [name, p] = params_[i];
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
    loaded[i].steps = param_steps;
    loaded[i].step = torch::full({}, static_cast<double>(param_steps), p.options().dtype(torch::kFloat));
    loaded[i].exp_avg = moment(keys[0]);
    loaded[i].exp_avg_sq = moment(keys[1]);
  }
  state_ = std::move(loaded);
  steps_ = steps;
  saved_ = Saved{};  // an undo point from before the load no longer applies
}

}  // namespace uio::optim
