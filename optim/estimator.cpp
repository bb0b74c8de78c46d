// optim/estimator.cpp — running a gradient plan over a document: plain autograd (full), recomputed
// windows (naive), and the incremental estimator with memory leaves (tbptt, unbiased).
#include "optim/estimator.h"

#include <ATen/Context.h>

#include <list>
#include <stdexcept>

#include "model/loss.h"
#include "data/phase.h"
#include "model/memory_pass.h"

namespace uio::optim {

EstimatorKind parse_estimator_kind(const std::string& name) {
  if (name == "full") return EstimatorKind::full;
  if (name == "tbptt_naive") return EstimatorKind::tbptt_naive;
  if (name == "tbptt") return EstimatorKind::tbptt;
  if (name == "unbiased") return EstimatorKind::unbiased;
  throw std::invalid_argument("estimator '" + name + "' is not one of full, tbptt_naive, tbptt, unbiased");
}

const char* estimator_kind_name(EstimatorKind kind) {
  switch (kind) {
    case EstimatorKind::full: return "full";
    case EstimatorKind::tbptt_naive: return "tbptt_naive";
    case EstimatorKind::tbptt: return "tbptt";
    case EstimatorKind::unbiased: return "unbiased";
  }
  return "?";
}

namespace {

void check_plan(const GradientPlan& plan, int64_t segments) {
  TORCH_CHECK(plan.segments() == segments, "estimator: the gradient plan covers ", plan.segments(),
              " segments, the document has ", segments);
}

// Forward: x. Backward: w times the gradient. The value is x exactly (x - x is 0).
torch::Tensor scale_gradient(const torch::Tensor& x, double w) {
  if (w == 1.0) return x;
  auto frozen = x.detach();
  return frozen + (x - frozen) * w;
}

// The memory a chunk's K decoders read, one row each, with each row's gradient routed two ways:
// `direct` receives the plain sum over rows (it feeds the transfer head, never scaled or cut);
// `route` receives the sum weighted by the plan (weights [K, P], one per row and memory entry),
// which is what flows on into the encoders. Both inputs hold the same values.
struct RouteMemory : public torch::autograd::Function<RouteMemory> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& direct,
                               const torch::Tensor& route, const torch::Tensor& weights) {
    (void)route;
    ctx->save_for_backward({weights});
    auto shape = direct.sizes().vec();  // [G, P, D]
    shape.insert(shape.begin(), weights.size(0));
    return direct.unsqueeze(0).expand(shape);  // [K, G, P, D]
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto weights = ctx->get_saved_variables()[0];  // [K, P]
    const auto& g = grad[0];  // [K, G, P, D]
    const auto acc = g.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
    auto w = weights.to(acc).view({weights.size(0), 1, weights.size(1), 1});
    auto routed = (g.to(acc) * w).sum(0).to(g.scalar_type());  // [G, P, D]
    return {g.sum(0), routed, torch::Tensor()};
  }
};

at::Generator dropout_generator(const torch::Device& device) { return at::globalContext().defaultGenerator(device); }

// The document's attention sink (none when the compressor keeps none): the same for every row. Its only
// trainable input is the decoder adapters (model/memory.h); without them it carries no gradient.
model::Memory document_sink(model::CausalLM& base, model::MemoryCompressor& compressor, const torch::Tensor& ids) {
  const int64_t k = compressor->options().sink_tokens;
  return k > 0 ? compressor->sink(base, ids.narrow(0, 0, k)) : model::Memory{};
}

// With a graph, the sink's keys and values as leaves the chunks' decoders read: like the memories' leaves
// (Eq. 6) they gather every loss's plain gradient, and the sink's own graph is back-propagated once, when
// the document is done (back_propagate_sink). Without a graph, the sink itself.
model::Memory sink_leaves(const model::Memory& sink) {
  if (sink.k.empty() || !sink.k.front().requires_grad()) return sink;
  model::Memory leaves;
  leaves.sink = sink.sink;
  for (size_t i = 0; i < sink.k.size(); ++i) {
    leaves.k.push_back(sink.k[i].detach().requires_grad_());
    leaves.v.push_back(sink.v[i].detach().requires_grad_());
  }
  return leaves;
}

void back_propagate_sink(const model::Memory& sink, const model::Memory& leaves) {
  std::vector<torch::Tensor> roots, grads;
  for (size_t i = 0; i < sink.k.size(); ++i)
    for (auto [root, leaf] : {std::pair{sink.k[i], leaves.k[i]}, std::pair{sink.v[i], leaves.v[i]}})
      if (root.requires_grad() && leaf.grad().defined()) roots.push_back(root), grads.push_back(leaf.grad());
  if (!roots.empty()) torch::autograd::backward(roots, grads);
}

// Per-row memory entries [K, G, P, D] after the sink's entries (every row reads the same sink).
void add_row_memory(model::Memory& memory, const model::Memory& sink, size_t layer, const torch::Tensor& k,
                    const torch::Tensor& v) {
  if (sink.k.empty()) {
    memory.k.push_back(k), memory.v.push_back(v);
    return;
  }
  memory.sink = sink.sink;
  auto rows = [&](const torch::Tensor& s) {
    return s.unsqueeze(0).expand({k.size(0), -1, -1, -1}).to(k.scalar_type());
  };
  memory.k.push_back(torch::cat({rows(sink.k[layer]), k}, 2));
  memory.v.push_back(torch::cat({rows(sink.v[layer]), v}, 2));
}

// One memory [G, sink + P, D] for every row (the sink first), with its routing twins (model/memory.h).
void add_shared_memory(model::Memory& memory, const model::Memory& sink, size_t layer, const torch::Tensor& k,
                       const torch::Tensor& v, const torch::Tensor& route_k, const torch::Tensor& route_v) {
  auto after_sink = [&](const std::vector<torch::Tensor>& first, const torch::Tensor& t) {
    return first.empty() ? t : torch::cat({first[layer].to(t.scalar_type()), t}, 1);
  };
  memory.sink = sink.sink;
  memory.k.push_back(after_sink(sink.k, k)), memory.v.push_back(after_sink(sink.v, v));
  memory.route_k.push_back(after_sink(sink.k, route_k)), memory.route_v.push_back(after_sink(sink.v, route_v));
}

}  // namespace

model::DocumentLoss backward_full(model::CausalLM& base, model::MemoryCompressor& compressor, const torch::Tensor& ids,
                                  int64_t chunk, double loss_scale, bool recompute_decoder,
                                  const torch::Tensor& loss_mask) {
  model::ScoredDocument doc(compressor->segment_len(), ids, loss_mask);
  torch::Tensor total;  // every memory keeps its encoder graph (Memory::append concatenates under autograd)
  model::MemoryPass(base, compressor, chunk, recompute_decoder)
      .read(ids, [&](int64_t first, const torch::Tensor& hidden) {
        auto loss = doc.score(base, hidden, first);
        total = total.defined() ? total + loss : loss;
      });
  data::Phase phase("uio::backward");
  if (total.requires_grad()) (total * loss_scale).backward();
  return doc.result(doc.segments());
}

model::DocumentLoss backward_naive(model::CausalLM& base, model::MemoryCompressor& compressor, const torch::Tensor& ids,
                                   const GradientPlan& plan, int64_t chunk, double loss_scale,
                                   const torch::Tensor& loss_mask) {
  TORCH_CHECK(chunk > 0, "estimator: chunk must be > 0");
  model::ScoredDocument doc(compressor->segment_len(), ids, loss_mask);
  check_plan(plan, doc.segments());
  const int64_t M = compressor->num_memory_tokens(), T = doc.segments();
  // Every memory's hidden states without a graph: the paths the plan cuts read these.
  std::vector<torch::Tensor> detached;  // L x [T, M, C]
  {
    torch::NoGradGuard no_grad;
    std::vector<std::vector<torch::Tensor>> parts;
    for (int64_t c0 = 0; c0 < T; c0 += chunk)
      parts.push_back(compressor->encode(base, doc.segment_ids(c0, std::min(chunk, T - c0))));
    for (size_t i = 0; i < parts.front().size(); ++i) {
      std::vector<torch::Tensor> layer;
      for (auto& p : parts) layer.push_back(p[i]);
      detached.push_back(torch::cat(layer));
    }
  }
  const int64_t L = static_cast<int64_t>(detached.size()), C = detached.front().size(2);
  int64_t peak = 0;
  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    const int64_t K = std::min(chunk, T - c0), read = c0 + K - 1;  // memories 0..read-1 are read
    auto segments = doc.segment_ids(c0, K);
    auto index = model::segment_rows(c0, K);
    if (read == 0) {  // no memory: only the decoder adapters, if any, take gradient from these rows
      torch::AutoGradMode grad_mode(static_cast<bool>(compressor->decoder));
      auto loss = doc.score(base, compressor->decode(base, segments, index, {}), c0);
      if (loss.requires_grad()) (loss * loss_scale).backward();
      continue;
    }
    // The sink afresh for every chunk, as everything here is recomputed per loss (with decoder adapters it
    // has a graph, which the chunk's backward frees).
    const auto sink = document_sink(base, compressor, ids);
    // Each (row, memory) path that carries gradient gets its own encoder pass, as if loss t alone
    // were back-propagated through its window.
    std::vector<std::vector<int64_t>> path(static_cast<size_t>(K), std::vector<int64_t>(static_cast<size_t>(read), -1));
    std::vector<torch::Tensor> path_segments;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t s = 0; s < c0 + k; ++s)
        if (plan.weight(c0 + k, s) != 0.0) {
          path[k][s] = static_cast<int64_t>(path_segments.size());
          path_segments.push_back(doc.segment_ids(s, 1));
        }
    std::vector<torch::Tensor> recomputed;  // L x [paths, M, C]
    if (!path_segments.empty()) recomputed = compressor->encode(base, torch::cat(path_segments));
    peak = std::max(peak, static_cast<int64_t>(path_segments.size()));
    std::vector<torch::Tensor> rows_hidden;  // L x [K * read, M, C]
    for (int64_t i = 0; i < L; ++i) {
      std::vector<torch::Tensor> rows;
      for (int64_t k = 0; k < K; ++k) {
        std::vector<torch::Tensor> parts;
        for (int64_t s = 0; s < read; ++s) {
          if (s >= c0 + k)
            parts.push_back(torch::zeros_like(detached[i][s]));  // masked for this row
          else if (path[k][s] >= 0)
            parts.push_back(scale_gradient(recomputed[i][path[k][s]], plan.weight(c0 + k, s)));
          else
            parts.push_back(detached[i][s]);
        }
        rows.push_back(torch::stack(parts));  // [read, M, C]
      }
      rows_hidden.push_back(torch::stack(rows).view({K * read, M, C}));
    }
    auto [keys, values] = compressor->transfer(base, rows_hidden);  // L x [K * read, G, M, D]
    model::Memory memory;
    for (int64_t i = 0; i < L; ++i) {
      const int64_t G = keys[i].size(1), D = keys[i].size(3);
      add_row_memory(memory, sink, static_cast<size_t>(i),
                     keys[i].view({K, read, G, M, D}).permute({0, 2, 1, 3, 4}).reshape({K, G, read * M, D}),
                     values[i].view({K, read, G, M, D}).permute({0, 2, 1, 3, 4}).reshape({K, G, read * M, D}));
    }
    auto loss = doc.score(base, compressor->decode(base, segments, index, memory), c0);
    (loss * loss_scale).backward();
  }
  return doc.result(peak);
}

model::DocumentLoss backward_incremental(model::CausalLM& base, model::MemoryCompressor& compressor,
                                         const torch::Tensor& ids, const GradientPlan& plan, int64_t chunk,
                                         bool activation_checkpointing, double loss_scale,
                                         const torch::Tensor& loss_mask) {
  TORCH_CHECK(chunk > 0, "estimator: chunk must be > 0");
  model::ScoredDocument doc(compressor->segment_len(), ids, loss_mask);
  check_plan(plan, doc.segments());
  const auto sink_graph = document_sink(base, compressor, ids);
  const auto sink = sink_leaves(sink_graph);
  const int64_t M = compressor->num_memory_tokens(), T = doc.segments();
  const auto device = ids.device();
  const auto params = compressor->transfer_head->parameters();
  const auto compute = base->output_weight().scalar_type();

  // Eq. 6: every memory's hidden states as a leaf the decoders read (values H, float32), and the
  // gradient the plan routes into it (dH); the encoder graphs wait in `pending` until dH is complete.
  std::vector<torch::Tensor> H, dH;  // L x [T * M, C]
  struct Pending {
    int64_t first, count, last_use;
    std::vector<torch::Tensor> hidden;  // the chunk's encoder outputs with their graph
    torch::Tensor segments, rng;  // activation checkpointing: recompute from these instead
  };
  std::list<Pending> pending;
  int64_t peak = 0;
  auto close = [&](Pending& p) {
    data::Phase phase("uio::encoder_backward");
    auto hidden = p.hidden;
    if (activation_checkpointing) {  // recompute the encoder with the dropout draws of its first pass
      auto gen = dropout_generator(device);
      auto now = gen.get_state();
      gen.set_state(p.rng);
      hidden = compressor->encode(base, p.segments);
      gen.set_state(now);
    }
    std::vector<torch::Tensor> grads;
    for (size_t i = 0; i < hidden.size(); ++i)
      grads.push_back(dH[i].narrow(0, p.first * M, p.count * M).view(hidden[i].sizes()).to(hidden[i].scalar_type()));
    torch::autograd::backward(hidden, grads);  // Eq. 9: once per encoder graph
  };

  for (int64_t c0 = 0; c0 < T; c0 += chunk) {
    const int64_t K = std::min(chunk, T - c0), read = c0 + K - 1;
    auto segments = doc.segment_ids(c0, K);
    auto index = model::segment_rows(c0, K);

    // Encoder: one batched pass over the chunk; a graph only if some loss will reach its memories.
    Pending p{c0, K, -1, {}, {}, {}};
    for (int64_t s = c0; s < c0 + K; ++s) p.last_use = std::max(p.last_use, plan.last_use(s));
    const bool keep_graph = p.last_use >= 0 && !activation_checkpointing;
    if (p.last_use >= 0 && activation_checkpointing)
      p.segments = segments, p.rng = dropout_generator(device).get_state();
    {
      data::Phase phase("uio::encode");
      torch::AutoGradMode grad_mode(keep_graph);
      auto hidden = compressor->encode(base, segments);  // L x [K, M, C]
      if (H.empty())
        for (auto& h : hidden) {
          auto opts = h.options().dtype(h.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat);
          H.push_back(torch::empty({T * M, h.size(2)}, opts));
          dH.push_back(torch::zeros({T * M, h.size(2)}, opts));
        }
      for (size_t i = 0; i < hidden.size(); ++i)
        H[i].narrow(0, c0 * M, K * M).copy_(hidden[i].detach().reshape({K * M, -1}));
      if (keep_graph) p.hidden = std::move(hidden);
    }
    if (p.last_use >= 0) pending.push_back(std::move(p));
    int64_t alive = 0;
    for (auto& q : pending) alive += q.count;
    peak = std::max(peak, alive);

    // Decoders: the chunk's rows read memories 0..read-1 through the transfer head.
    if (read == 0) {  // no memory: only the decoder adapters, if any, take gradient from these rows
      data::Phase phase("uio::decode");
      torch::AutoGradMode grad_mode(static_cast<bool>(compressor->decoder));
      auto loss = doc.score(base, compressor->decode(base, segments, index, {}, nullptr, activation_checkpointing), c0);
      if (loss.requires_grad()) (loss * loss_scale).backward();
    } else {
      data::Phase transfer_phase("uio::transfer");
      const int64_t P = read * M, s = sink.sink;
      // The plan per row and memory entry, after the sink's entries (which carry no gradient).
      auto host_weights = torch::zeros({K, s + P}, torch::kDouble);
      auto w = host_weights.accessor<double, 2>();
      for (int64_t k = 0; k < K; ++k)
        for (int64_t e = 0; e < P; ++e) w[k][s + e] = plan.weight(c0 + k, e / M);
      // Fused kernels read one memory for all rows and route in the attention's backward; otherwise
      // each row reads its own expanded copy through RouteMemory.
      const bool shared = compressor->reads_shared_memory(base);
      auto weights =
          host_weights.narrow(1, s, P).to(device, compute == torch::kDouble ? torch::kDouble : torch::kFloat);

      std::vector<torch::Tensor> x, flat, direct, route;  // x: L leaves [P, C]; flat: k, v per layer
      std::vector<torch::Tensor> hidden_in;
      for (auto& h : H) {
        x.push_back(h.narrow(0, 0, P).detach().requires_grad_());
        hidden_in.push_back(x.back().to(compute).view({read, M, -1}));  // [read, M, C]
      }
      auto [keys, values] = compressor->transfer(base, hidden_in);  // L x [read, G, M, D]
      model::Memory memory;
      for (size_t i = 0; i < keys.size(); ++i) {
        const int64_t G = keys[i].size(1), D = keys[i].size(3);
        for (auto* kv : {&keys[i], &values[i]}) {
          flat.push_back(kv->permute({1, 0, 2, 3}).reshape({G, P, D}));  // [G, P, D]
          direct.push_back(flat.back().detach().requires_grad_());
          route.push_back(flat.back().detach().requires_grad_());
        }
        if (shared) {
          add_shared_memory(memory, sink, i, direct[2 * i], direct[2 * i + 1], route[2 * i], route[2 * i + 1]);
          continue;
        }
        add_row_memory(memory, sink, i, RouteMemory::apply(direct[2 * i], route[2 * i], weights),  // [K, G, P, D]
                       RouteMemory::apply(direct[2 * i + 1], route[2 * i + 1], weights));
      }
      if (shared) memory.route_weights = host_weights;
      transfer_phase.end();
      data::Phase decode_phase("uio::decode");
      auto hidden = compressor->decode(base, segments, index, memory, nullptr, activation_checkpointing);
      auto loss = doc.score(base, hidden, c0);
      decode_phase.end();
      data::Phase phase("uio::decoder_backward");
      (loss * loss_scale).backward();
      // The transfer head takes the plain gradient; the memories' leaves take the routed one (Eq. 7-8).
      std::vector<torch::Tensor> g_direct, g_route;
      for (size_t j = 0; j < flat.size(); ++j) {
        g_direct.push_back(direct[j].grad().defined() ? direct[j].grad() : torch::zeros_like(flat[j]));
        g_route.push_back(route[j].grad().defined() ? route[j].grad() : torch::zeros_like(flat[j]));
      }
      torch::autograd::backward(flat, g_direct, /*retain_graph=*/true, /*create_graph=*/false, params);
      auto dx = torch::autograd::grad(flat, x, g_route, /*retain_graph=*/false, /*create_graph=*/false,
                                      /*allow_unused=*/true);
      for (size_t i = 0; i < dx.size(); ++i)
        if (dx[i].defined()) dH[i].narrow(0, 0, P).add_(dx[i]);
    }

    // Eq. 9: back-propagate every encoder graph whose memories no later loss reaches.
    const int64_t done = c0 + K - 1;  // the last loss computed so far
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->last_use <= done)
        close(*it), it = pending.erase(it);
      else
        ++it;
    }
  }
  for (auto& p : pending) close(p);
  back_propagate_sink(sink_graph, sink);
  return doc.result(peak);
}

GradientEstimator::GradientEstimator(const EstimatorOptions& options) : options_(options), rng_(options.seed) {
  TORCH_CHECK(options.window >= 1, "estimator: window must be >= 1, got ", options.window);
  TORCH_CHECK(options.chunk >= 1, "estimator: chunk must be >= 1, got ", options.chunk);
}

GradientPlan GradientEstimator::next_plan(int64_t segments) {
  switch (options_.kind) {
    case EstimatorKind::full: return full_plan(segments);
    case EstimatorKind::tbptt_naive:
    case EstimatorKind::tbptt: return window_plan(segments, options_.window);
    case EstimatorKind::unbiased:
      return reservoir_plan(segments, options_.window, rng_.draws(segments, options_.window));
  }
  throw std::logic_error("estimator: unknown kind");
}

model::DocumentLoss GradientEstimator::backward(model::CausalLM& base, model::MemoryCompressor& compressor,
                                                const torch::Tensor& ids, double loss_scale,
                                                const torch::Tensor& loss_mask) {
  const int64_t T = ids.size(0) / compressor->segment_len();
  switch (options_.kind) {
    case EstimatorKind::full:
      return backward_full(base, compressor, ids, options_.chunk, loss_scale, options_.activation_checkpointing,
                           loss_mask);
    case EstimatorKind::tbptt_naive:
      return backward_naive(base, compressor, ids, next_plan(T), options_.chunk, loss_scale, loss_mask);
    case EstimatorKind::tbptt:
    case EstimatorKind::unbiased:
      return backward_incremental(base, compressor, ids, next_plan(T), options_.chunk,
                                  options_.activation_checkpointing, loss_scale, loss_mask);
  }
  throw std::logic_error("estimator: unknown kind");
}

}  // namespace uio::optim
