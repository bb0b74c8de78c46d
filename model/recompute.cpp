// model/recompute.cpp — activation checkpointing through a custom autograd function.
#include "model/recompute.h"

#include <ATen/Context.h>

namespace uio::model {
namespace {

struct Closure : torch::CustomClassHolder {
  RecomputeFn fn;
  at::Generator generator;
  torch::Tensor rng_state;
};

struct Recompute : public torch::autograd::Function<Recompute> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::TensorList inputs,
                                                c10::intrusive_ptr<Closure> closure) {
    ctx->save_for_backward(inputs.vec());
    auto outputs = closure->fn(inputs.vec());  // autograd is off inside Function::forward
    ctx->saved_data["closure"] = c10::IValue::make_capsule(std::move(closure));
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto closure = c10::static_intrusive_pointer_cast<Closure>(ctx->saved_data["closure"].toCapsule());
    const auto saved = ctx->get_saved_variables();
    std::vector<torch::Tensor> leaves;
    for (const auto& x : saved) leaves.push_back(x.detach().requires_grad_(x.requires_grad()));
    std::vector<torch::Tensor> outputs;
    {
      // Replay the forward with the random draws of its first run, then put the generator back.
      auto now = closure->generator.get_state();
      closure->generator.set_state(closure->rng_state);
      torch::AutoGradMode grad_on(true);
      outputs = closure->fn(leaves);
      closure->generator.set_state(now);
    }
    std::vector<torch::Tensor> roots, root_grads;
    for (size_t i = 0; i < outputs.size() && i < grads.size(); ++i)
      if (outputs[i].requires_grad() && grads[i].defined()) roots.push_back(outputs[i]), root_grads.push_back(grads[i]);
    if (!roots.empty()) torch::autograd::backward(roots, root_grads);  // parameters inside fn accumulate here
    torch::autograd::variable_list out;
    for (auto& leaf : leaves) out.push_back(leaf.requires_grad() ? leaf.grad() : torch::Tensor());
    out.emplace_back();  // the closure
    return out;
  }
};

}  // namespace

std::vector<torch::Tensor> recompute_in_backward(const RecomputeFn& fn, const std::vector<torch::Tensor>& inputs) {
  bool any = false;
  for (const auto& x : inputs) any = any || (x.defined() && x.requires_grad());
  if (!torch::GradMode::is_enabled() || !any) return fn(inputs);
  auto closure = c10::make_intrusive<Closure>();
  closure->fn = fn;
  closure->generator = at::globalContext().defaultGenerator(inputs.front().device());
  closure->rng_state = closure->generator.get_state();
  // As a TensorList each input counts as one differentiable argument (a std::vector would count as
  // one non-tensor argument).
  return Recompute::apply(at::TensorList(inputs), std::move(closure));
}

}  // namespace uio::model
