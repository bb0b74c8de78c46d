// model/memory_attention.cpp — shared-prefix attention: two fused attention calls merged by log-sum-exp,
// their fused backward passes with the merged output, and the routed per-row memory gradients.
#include "model/memory_attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "model/rope.h"

namespace uio::model {

namespace {

// Which kernel runs a part. CUDA: flash for half types without a bias (it takes no mask), else the
// memory-efficient kernel (a bias, float32); the CPU has a flash kernel for every float type. `math` is
// the plain formula (any device, float64 on CUDA).
enum class Backend { cuda_cudnn, cuda_flash, cuda_efficient, cpu_flash, math };

Backend choose_backend(const torch::Tensor& q, bool has_bias) {
  const auto t = q.scalar_type();
  if (q.is_cuda()) {
    const bool half = t == torch::kBFloat16 || t == torch::kHalf;
    const int64_t D = q.size(-1);
    if (half && D % 8 == 0 && D <= 128) return Backend::cuda_cudnn;  // Hopper's fastest, takes a bias
    if (half && !has_bias && D % 8 == 0 && D <= 256) return Backend::cuda_flash;
    if (t != torch::kDouble) return Backend::cuda_efficient;
    return Backend::math;
  }
  return q.is_cpu() ? Backend::cpu_flash : Backend::math;
}

// [B, H, T] of a kernel's log-sum-exp ([B, H, T'] with T' >= T padded, or cuDNN's [B, H, T, 1]).
torch::Tensor lse_rows(const torch::Tensor& lse, int64_t T) {
  return (lse.dim() == 4 ? lse.select(-1, 0) : lse).narrow(-1, 0, T);
}

torch::ScalarType accumulate_dtype(const torch::Tensor& t) {
  return t.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
}

// One attention call over [B, H, Tq, D] queries and [B, H, S, D] keys/values, with an additive bias
// [B, H, Tq, S] (0 or -inf) or `causal` (square), and what its backward needs from the forward.
struct Part {
  Backend backend = Backend::math;
  bool causal = false;
  torch::Tensor out, lse;  // as the kernel returned them (lse may be padded along Tq)
  torch::Tensor cum_q, cum_k, seed, offset;  // flash / efficient bookkeeping
  int64_t max_q = 0, max_k = 0;
};

torch::Tensor math_scores(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& bias, bool causal,
                          double scale) {
  const auto acc = accumulate_dtype(q);
  auto s = torch::matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale;  // [B, H, Tq, S]
  if (bias.defined()) s = s + bias.to(acc);
  if (causal) {
    auto allowed = torch::ones({q.size(2), k.size(2)}, q.options().dtype(torch::kBool)).tril(k.size(2) - q.size(2));
    s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  }
  return s;
}

Part part_forward(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const torch::Tensor& bias,
                  bool causal, double scale) {
  Part p;
  p.backend = choose_backend(q, bias.defined());
  p.causal = causal;
  switch (p.backend) {
    case Backend::cuda_cudnn: {
      auto r = at::_scaled_dot_product_cudnn_attention(
          q, k, v, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, true, 0.0, causal, false, scale);
      p.out = std::get<0>(r), p.lse = std::get<1>(r), p.cum_q = std::get<2>(r), p.cum_k = std::get<3>(r);
      p.max_q = std::get<4>(r).expect_int(), p.max_k = std::get<5>(r).expect_int();
      p.seed = std::get<6>(r), p.offset = std::get<7>(r);
      break;
    }
    case Backend::cuda_flash: {
      auto r = at::_scaled_dot_product_flash_attention(q, k, v, 0.0, causal, false, scale);
      p.out = std::get<0>(r), p.lse = std::get<1>(r), p.cum_q = std::get<2>(r), p.cum_k = std::get<3>(r);
      p.max_q = std::get<4>(r).expect_int(), p.max_k = std::get<5>(r).expect_int();
      p.seed = std::get<6>(r), p.offset = std::get<7>(r);
      break;
    }
    case Backend::cuda_efficient: {
      auto r = at::_scaled_dot_product_efficient_attention(
          q, k, v, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, true, 0.0, causal, scale);
      p.out = std::get<0>(r), p.lse = std::get<1>(r), p.seed = std::get<2>(r), p.offset = std::get<3>(r);
      break;
    }
    case Backend::cpu_flash: {
      auto r = at::_scaled_dot_product_flash_attention_for_cpu(
          q, k, v, 0.0, causal, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, scale);
      p.out = std::get<0>(r), p.lse = std::get<1>(r);
      break;
    }
    case Backend::math: {
      auto s = math_scores(q, k, bias, causal, scale);
      p.lse = s.logsumexp(-1);
      p.out = torch::matmul((s - p.lse.unsqueeze(-1)).exp(), v.to(s.scalar_type())).to(q.scalar_type());
      break;
    }
  }
  return p;
}

// The merged output and log-sum-exp laid out as this part's forward returned its own (the kernels'
// backward passes read them with the forward's strides and padding).
std::pair<torch::Tensor, torch::Tensor> as_part(const Part& p, const torch::Tensor& out, const torch::Tensor& lse) {
  auto o = torch::empty_like(p.out);
  o.copy_(out);
  auto l = torch::zeros_like(p.lse);
  lse_rows(l, lse.size(-1)).copy_(lse);
  return {o, l};
}

// Gradients (dq, dk, dv) of this part's keys given the gradient of the merged output and the merged
// output and log-sum-exp: each part's softmax is the merged one restricted to its keys.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> part_backward(const Part& p, const torch::Tensor& dout,
                                                                      const torch::Tensor& q, const torch::Tensor& k,
                                                                      const torch::Tensor& v, const torch::Tensor& bias,
                                                                      const torch::Tensor& out,
                                                                      const torch::Tensor& lse, double scale) {
  auto [o, l] = as_part(p, out, lse);
  switch (p.backend) {
    case Backend::cuda_cudnn:
      return at::_scaled_dot_product_cudnn_attention_backward(dout, q, k, v, o, l, p.seed, p.offset,
                                                              bias.defined() ? bias : torch::Tensor(), p.cum_q, p.cum_k,
                                                              p.max_q, p.max_k, 0.0, p.causal, scale);
    case Backend::cuda_flash:
      return at::_scaled_dot_product_flash_attention_backward(dout, q, k, v, o, l, p.cum_q, p.cum_k, p.max_q, p.max_k,
                                                              0.0, p.causal, p.seed, p.offset, scale);
    case Backend::cuda_efficient: {
      auto r = at::_scaled_dot_product_efficient_attention_backward(
          dout, q, k, v, bias.defined() ? bias : torch::Tensor(), o, l, p.seed, p.offset, 0.0,
          {true, true, true, false}, p.causal, scale);
      return {std::get<0>(r), std::get<1>(r), std::get<2>(r)};
    }
    case Backend::cpu_flash:
      return at::_scaled_dot_product_flash_attention_for_cpu_backward(
          dout, q, k, v, o, l, 0.0, p.causal, bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt, scale);
    case Backend::math: {
      auto s = math_scores(q, k, bias, p.causal, scale);
      const auto acc = s.scalar_type();
      auto prob = (s - lse.to(acc).unsqueeze(-1)).exp();  // the merged softmax over this part's keys
      auto g = dout.to(acc);
      auto delta = (g * out.to(acc)).sum(-1, true);
      auto ds = prob * (torch::matmul(g, v.to(acc).transpose(-1, -2)) - delta);
      return {(torch::matmul(ds, k.to(acc)) * scale).to(q.scalar_type()),
              (torch::matmul(ds.transpose(-1, -2), q.to(acc)) * scale).to(k.scalar_type()),
              torch::matmul(prob.transpose(-1, -2), g).to(v.scalar_type())};
    }
  }
  TORCH_CHECK(false, "memory attention: unknown backend");
}

// Part A with one set of RoPE tables attends the K rows of a chunk as one batch of K T queries per head:
// [K, H, T, X] -> [1, H, K T, X] (or [K, H, T] -> [1, H, K T] for the log-sum-exp), and back.
torch::Tensor rows_as_one(const torch::Tensor& t) {
  const int64_t K = t.size(0), H = t.size(1), T = t.size(2);
  return t.dim() == 3 ? t.transpose(0, 1).reshape({1, H, K * T}) : t.transpose(0, 1).reshape({1, H, K * T, -1});
}
torch::Tensor rows_apart(const torch::Tensor& t, int64_t K) {
  const int64_t H = t.size(1);
  return t.dim() == 3 ? t.reshape({H, K, -1}).transpose(0, 1) : t.reshape({H, K, -1, t.size(-1)}).transpose(0, 1);
}

// [B, G, S, D] -> [B, H, S, D]: each KV head repeated for its H / G query heads (the kernels' layout).
torch::Tensor repeat_heads(const torch::Tensor& kv, int64_t heads) {
  const int64_t B = kv.size(0), G = kv.size(1), S = kv.size(2), D = kv.size(3);
  if (heads == G) return kv;
  return kv.unsqueeze(2).expand({B, G, heads / G, S, D}).reshape({B, heads, S, D});
}

// The reverse for gradients: [B, H, S, D] -> [B, G, S, D], summed over each group's query heads.
torch::Tensor sum_heads(const torch::Tensor& g, int64_t groups) {
  const int64_t B = g.size(0), H = g.size(1), S = g.size(2), D = g.size(3);
  if (H == groups) return g;
  return g.view({B, groups, H / groups, S, D}).sum(2);
}

// The memory's rotation: per-row tables [K, P, D] (dynamic NTK past the base window: every row scales
// its own frequencies), one table [1, P, D] for every row, or none (keys given rotated).
struct Rotation {
  torch::Tensor cos, sin;  // float32, or undefined
  bool per_row() const { return cos.defined() && cos.size(0) > 1; }
  // Entries [first, first + n) of an un-rotated memory [G, P, D], rotated: [K or 1, G, n, D].
  torch::Tensor apply(const torch::Tensor& m, int64_t first, int64_t n, torch::ScalarType dtype) const {
    auto x = m.narrow(1, first, n).unsqueeze(0).to(dtype);
    if (!cos.defined()) return x;
    return apply_rope(x.expand({cos.size(0), m.size(0), n, m.size(2)}), cos.narrow(1, first, n),
                      sin.narrow(1, first, n));
  }
  // The gradient of apply()'s output [K or 1, G, n, D] taken back to the un-rotated entries (R^T = R(-θ)).
  torch::Tensor undo(const torch::Tensor& g, int64_t first, int64_t n) const {
    if (!cos.defined()) return g;
    return apply_rope(g, cos.narrow(1, first, n), -sin.narrow(1, first, n));
  }
  // Tables at per-row entries `index` [K, E]: [K, E, D] each.
  std::pair<torch::Tensor, torch::Tensor> at(const torch::Tensor& index) const {
    const int64_t K = index.size(0), E = index.size(1), D = cos.size(2);
    auto pick = [&](const torch::Tensor& t) {
      return t.expand({K, t.size(1), D}).gather(1, index.unsqueeze(-1).expand({K, E, D}));
    };
    return {pick(cos), pick(sin)};
  }
};

// The layout of the second part: for every row the memories of earlier rows of the chunk (entries
// [shared, shared + rows)), rotated, then its own tokens. Keys [K, G, rows + T, D] and the additive bias
// (row_part_bias(), or `bias` when the caller made it once for all layers).
struct RowKeys {
  torch::Tensor k, v, bias;
};

RowKeys row_keys(const torch::Tensor& mk, const torch::Tensor& mv, const torch::Tensor& k_own,
                 const torch::Tensor& v_own, const Rotation& rotation, const std::vector<int64_t>& visible,
                 int64_t shared, int64_t rows, const torch::Tensor& own_mask, const torch::Tensor& bias,
                 int64_t heads) {
  const int64_t K = k_own.size(0), G = k_own.size(1), T = k_own.size(2), D = k_own.size(3);
  RowKeys r;
  if (rows == 0) {
    r.k = k_own, r.v = v_own;
  } else {
    auto keys = rotation.apply(mk, shared, rows, k_own.scalar_type()).expand({K, G, rows, D});
    r.k = torch::cat({keys, k_own}, 2);
    r.v =
        torch::cat({mv.narrow(1, shared, rows).unsqueeze(0).expand({K, G, rows, D}).to(v_own.scalar_type()), v_own}, 2);
  }
  r.bias = bias.defined() ? bias : row_part_bias(visible, T, own_mask, heads, k_own.options());
  return r;
}

// Per-row gradients of the routed memory entries: for row b and entry e with w[b, e] != 0,
// w[b, e] * dL_b/dk_e and w[b, e] * dL_b/dv_e (k_e un-rotated), from the row's queries, output gradient,
// merged output and log-sum-exp over those keys alone; summed over rows into [G, P, D].
std::pair<torch::Tensor, torch::Tensor> routed_gradients(const torch::Tensor& q, const torch::Tensor& dout,
                                                         const torch::Tensor& out, const torch::Tensor& lse,
                                                         const torch::Tensor& mk, const torch::Tensor& mv,
                                                         const Rotation& rotation, const torch::Tensor& index,
                                                         const torch::Tensor& weight, double scale) {
  const int64_t K = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), G = mk.size(0), P = mk.size(1);
  const int64_t E = index.size(1);
  const auto acc = accumulate_dtype(q);
  auto dk = torch::zeros({G, P, D}, mk.options().dtype(acc)), dv = torch::zeros({G, P, D}, mv.options().dtype(acc));
  if (E == 0) return {dk.to(mk.scalar_type()), dv.to(mv.scalar_type())};
  auto scale_by = weight.to(acc).view({K, 1, E, 1});
  const int64_t R = H / G;
  auto pick = [&](const torch::Tensor& m) {  // [G, P, D] -> [K, G, E, D]
    return m.index_select(1, index.flatten()).view({G, K, E, D}).permute({1, 0, 2, 3}).to(acc);
  };
  auto ke = pick(mk), ve = pick(mv);
  torch::Tensor cos_e, sin_e;
  if (rotation.cos.defined()) std::tie(cos_e, sin_e) = rotation.at(index), ke = apply_rope(ke, cos_e, sin_e);
  auto group = [&](const torch::Tensor& t) { return t.to(acc).reshape({K, G, R * T, -1}); };  // [K, G, R T, .]
  auto qg = group(q), dg = group(dout);
  auto s = torch::matmul(qg, ke.transpose(-1, -2)) * scale;  // [K, G, R T, E]
  s.masked_fill_((scale_by == 0).view({K, 1, 1, E}), -std::numeric_limits<double>::infinity());
  auto prob = (s - group(lse.unsqueeze(-1))).exp();
  auto delta = (dg * group(out)).sum(-1, true);
  auto ds = prob * (torch::matmul(dg, ve.transpose(-1, -2)) - delta);
  auto dke = torch::matmul(ds.transpose(-1, -2), qg) * scale * scale_by;  // [K, G, E, D], rotated keys
  if (rotation.cos.defined()) dke = apply_rope(dke, cos_e, -sin_e);
  auto dve = torch::matmul(prob.transpose(-1, -2), dg) * scale_by;
  auto flat = [&](const torch::Tensor& t) { return t.permute({1, 0, 2, 3}).reshape({G, K * E, D}); };
  dk.index_add_(1, index.flatten(), flat(dke));
  dv.index_add_(1, index.flatten(), flat(dve));
  return {dk.to(mk.scalar_type()), dv.to(mv.scalar_type())};
}

// What the attention takes besides its differentiable inputs (passed outside autograd's input list,
// which cannot hold undefined tensors).
struct Layout {
  std::vector<int64_t> visible;
  torch::Tensor own_mask;  // [T, T] bool or undefined (causal)
  torch::Tensor index, weight;  // RouteEntries, or undefined when not routing
  Rotation rotation;
  torch::Tensor bias;  // row_part_bias(), or undefined to make it here
};

// The shared part's keys and values: [1, H, shared, D] read by all K*T queries at once, or, when every
// row rotates the memory its own way, [K, H, shared, D] (no per-row copy is kept: made again in the
// backward).
std::pair<torch::Tensor, torch::Tensor> shared_keys(const torch::Tensor& mk, const torch::Tensor& mv,
                                                    const Rotation& rotation, int64_t shared, int64_t K, int64_t H,
                                                    torch::ScalarType dtype) {
  auto k = rotation.apply(mk, 0, shared, dtype);  // [K or 1, G, shared, D]
  auto v = mv.narrow(1, 0, shared).unsqueeze(0).to(dtype);
  if (rotation.per_row()) v = v.expand({K, v.size(1), shared, v.size(3)});
  return {repeat_heads(k, H), repeat_heads(v, H)};
}

struct SharedPrefixAttention : public torch::autograd::Function<SharedPrefixAttention> {
  // mk, mv, route_k, route_v un-rotated; route_k, route_v hold mk's and mv's values (only their
  // gradients differ), or are empty placeholders.
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& q, const torch::Tensor& k,
                               const torch::Tensor& v, const torch::Tensor& mk, const torch::Tensor& mv,
                               const torch::Tensor& route_k, const torch::Tensor& route_v, const Layout& layout) {
    (void)route_k, (void)route_v;
    const auto& visible = layout.visible;
    const auto& rotation = layout.rotation;
    const int64_t K = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    const int64_t shared = *std::min_element(visible.begin(), visible.end());
    const int64_t rows = *std::max_element(visible.begin(), visible.end()) - shared;
    const auto acc = accumulate_dtype(q);

    auto rk = row_keys(mk, mv, k, v, rotation, visible, shared, rows, layout.own_mask, layout.bias, H);
    auto b = part_forward(q, repeat_heads(rk.k, H), repeat_heads(rk.v, H), rk.bias, !rk.bias.defined(), scale);
    auto lse = lse_rows(b.lse, T).to(acc);  // [K, H, T]
    auto out = b.out.to(acc);
    Part a;
    if (shared > 0) {
      auto [ka, va] = shared_keys(mk, mv, rotation, shared, K, H, q.scalar_type());
      torch::Tensor lse_a, out_a;
      if (rotation.per_row()) {
        a = part_forward(q, ka, va, torch::Tensor(), false, scale);
        lse_a = lse_rows(a.lse, T).to(acc), out_a = a.out.to(acc);
      } else {
        a = part_forward(rows_as_one(q), ka, va, torch::Tensor(), false, scale);
        lse_a = rows_apart(lse_rows(a.lse, K * T).to(acc), K);  // [K, H, T]
        out_a = rows_apart(a.out.to(acc), K);
      }
      auto merged = torch::logaddexp(lse, lse_a);
      out = out * (lse - merged).exp().unsqueeze(-1) + out_a * (lse_a - merged).exp().unsqueeze(-1);
      lse = merged;
    }
    out = out.to(q.scalar_type());
    ctx->save_for_backward({q,
                            k,
                            v,
                            mk,
                            mv,
                            out,
                            lse,
                            rk.bias,
                            layout.index,
                            layout.weight,
                            rotation.cos,
                            rotation.sin,
                            b.out,
                            b.lse,
                            b.cum_q,
                            b.cum_k,
                            b.seed,
                            b.offset,
                            a.out,
                            a.lse,
                            a.cum_q,
                            a.cum_k,
                            a.seed,
                            a.offset});
    ctx->saved_data["visible"] = c10::List<int64_t>(visible);
    ctx->saved_data["b"] = std::vector<int64_t>{static_cast<int64_t>(b.backend), b.causal, b.max_q, b.max_k};
    ctx->saved_data["a"] = std::vector<int64_t>{static_cast<int64_t>(a.backend), a.causal, a.max_q, a.max_k};
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto s = ctx->get_saved_variables();
    const auto &q = s[0], &k = s[1], &v = s[2], &mk = s[3], &mv = s[4], &out = s[5], &lse = s[6], &bias = s[7],
               &index = s[8], &weight = s[9];
    const Rotation rotation{s[10], s[11]};
    auto restore = [&](const char* key, size_t first) {
      auto m = ctx->saved_data[key].toIntVector();
      Part p;
      p.backend = static_cast<Backend>(m[0]), p.causal = m[1] != 0, p.max_q = m[2], p.max_k = m[3];
      p.out = s[first], p.lse = s[first + 1], p.cum_q = s[first + 2], p.cum_k = s[first + 3];
      p.seed = s[first + 4], p.offset = s[first + 5];
      return p;
    };
    auto visible_list = ctx->saved_data["visible"].toIntVector();
    std::vector<int64_t> visible(visible_list.begin(), visible_list.end());
    const int64_t K = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), G = k.size(1), P = mk.size(1);
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    const int64_t shared = *std::min_element(visible.begin(), visible.end());
    const int64_t rows = *std::max_element(visible.begin(), visible.end()) - shared;
    auto dout = grad[0].contiguous();

    auto dmk = torch::zeros({G, P, D}, mk.options()), dmv = torch::zeros({G, P, D}, mv.options());
    auto rk = row_keys(mk, mv, k, v, rotation, visible, shared, rows, torch::Tensor(), bias, H);
    auto [dq, dkb, dvb] = part_backward(restore("b", 12), dout, q, repeat_heads(rk.k, H), repeat_heads(rk.v, H),
                                        rk.bias, out, lse, scale);
    dkb = sum_heads(dkb, G), dvb = sum_heads(dvb, G);  // [K, G, rows + T, D]
    auto dk = dkb.narrow(2, rows, T), dv = dvb.narrow(2, rows, T);
    // The memory's gradient: summed over rows (per-row rotations are undone first), un-rotated.
    auto to_memory = [&](const torch::Tensor& g, int64_t first, int64_t n) {  // [K or 1, G, n, D] -> [G, n, D]
      return rotation.per_row() ? rotation.undo(g, first, n).sum(0) : rotation.undo(g.sum(0, true), first, n)[0];
    };
    if (rows > 0) {
      dmk.narrow(1, shared, rows).copy_(to_memory(dkb.narrow(2, 0, rows), shared, rows));
      dmv.narrow(1, shared, rows).copy_(dvb.narrow(2, 0, rows).sum(0));
    }
    if (shared > 0) {
      auto [ka, va] = shared_keys(mk, mv, rotation, shared, K, H, q.scalar_type());
      const auto part = restore("a", 18);
      torch::Tensor dka, dva;
      if (rotation.per_row()) {
        torch::Tensor dqa;
        std::tie(dqa, dka, dva) = part_backward(part, dout, q, ka, va, torch::Tensor(), out, lse, scale);
        dq = dq + dqa;
      } else {
        torch::Tensor dqa;
        std::tie(dqa, dka, dva) = part_backward(part, rows_as_one(dout), rows_as_one(q), ka, va, torch::Tensor(),
                                                rows_as_one(out), rows_as_one(lse), scale);
        dq = dq + rows_apart(dqa, K);
      }
      dmk.narrow(1, 0, shared).copy_(to_memory(sum_heads(dka, G), 0, shared));
      dmv.narrow(1, 0, shared).copy_(sum_heads(dva, G).sum(0));
    }
    torch::Tensor droute_k, droute_v;
    if (index.defined() && (ctx->needs_input_grad(5) || ctx->needs_input_grad(6)))
      std::tie(droute_k, droute_v) = routed_gradients(q, dout, out, lse, mk, mv, rotation, index, weight, scale);
    return {dq, dk, dv, dmk, dmv, droute_k, droute_v, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor shared_prefix_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                      const SharedMemoryPrefix& memory, const torch::Tensor& own_mask) {
  const int64_t K = q.size(0), G = k.size(1), T = k.size(2), D = q.size(3);
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.sizes() == k.sizes() && k.size(0) == K && q.size(2) == T &&
                  k.size(3) == D && q.size(1) % G == 0,
              "memory attention: queries [K, H, T, D] and own keys/values [K, G, T, D] disagree: ", q.sizes(), ", ",
              k.sizes(), ", ", v.sizes());
  const auto& mk = memory.k;
  TORCH_CHECK(mk.dim() == 3 && mk.size(0) == G && mk.size(2) == D && memory.v.sizes() == mk.sizes(),
              "memory attention: memory keys/values must be [", G, ", P, ", D, "], got ", mk.sizes(), " and ",
              memory.v.sizes());
  TORCH_CHECK(static_cast<int64_t>(memory.visible.size()) == K, "memory attention: ", memory.visible.size(),
              " visible counts for ", K, " rows");
  for (auto n : memory.visible)
    TORCH_CHECK(n >= 0 && n <= mk.size(1), "memory attention: a row sees ", n, " of ", mk.size(1), " entries");
  const bool route = memory.route_k.defined();
  TORCH_CHECK(!route || (memory.route_k.sizes() == mk.sizes() && memory.route_v.sizes() == mk.sizes() &&
                         memory.route.index.dim() == 2 && memory.route.index.size(0) == K &&
                         memory.route.weight.sizes() == memory.route.index.sizes()),
              "memory attention: routing needs route_k/route_v like the memory and route_entries() for ", K, " rows");
  TORCH_CHECK(!own_mask.defined() || (own_mask.dim() == 2 && own_mask.size(0) == T && own_mask.size(1) == T),
              "memory attention: the own-token mask must be [", T, ", ", T, "], got ", own_mask.sizes());
  TORCH_CHECK(memory.cos.defined() == memory.sin.defined() &&
                  (!memory.cos.defined() || (memory.cos.dim() == 3 && memory.sin.sizes() == memory.cos.sizes() &&
                                             (memory.cos.size(0) == 1 || memory.cos.size(0) == K) &&
                                             memory.cos.size(1) >= mk.size(1) && memory.cos.size(2) == D)),
              "memory attention: the memory's rotation tables must be [1 or ", K, ", >= ", mk.size(1), ", ", D,
              "], got ", memory.cos.sizes());
  Layout layout{memory.visible,
                own_mask,
                route ? memory.route.index : torch::Tensor(),
                route ? memory.route.weight : torch::Tensor(),
                Rotation{memory.cos.defined() ? memory.cos.narrow(1, 0, mk.size(1)) : torch::Tensor(),
                         memory.sin.defined() ? memory.sin.narrow(1, 0, mk.size(1)) : torch::Tensor()},
                memory.row_bias};
  auto none = torch::empty({0}, mk.options());
  return SharedPrefixAttention::apply(q, k, v, mk, memory.v, route ? memory.route_k : none,
                                      route ? memory.route_v : none, layout);
}

torch::Tensor row_part_bias(const std::vector<int64_t>& visible, int64_t T, const torch::Tensor& own_mask,
                            int64_t heads, const torch::TensorOptions& options) {
  const int64_t K = static_cast<int64_t>(visible.size());
  const int64_t shared = *std::min_element(visible.begin(), visible.end());
  const int64_t rows = *std::max_element(visible.begin(), visible.end()) - shared;
  if (rows == 0 && !own_mask.defined()) return {};  // causal over the row's own tokens
  const int64_t S = rows + T, padded = (S + 15) / 16 * 16;  // the efficient kernel wants aligned rows
  auto long_opts = options.dtype(torch::kLong);
  auto own = own_mask.defined() ? own_mask.to(options.device())
                                : torch::ones({T, T}, long_opts.dtype(torch::kBool)).tril();  // [T, T]
  std::vector<int64_t> seen_host;
  for (auto n : visible) seen_host.push_back(n - shared);
  auto seen = torch::tensor(seen_host, torch::kLong).to(options.device()).view({K, 1, 1});
  auto memory = torch::arange(rows, long_opts).view({1, 1, rows}) < seen;  // [K, 1, rows]
  auto allowed = torch::cat({memory.expand({K, T, rows}), own.unsqueeze(0).expand({K, T, T})}, 2);  // [K, T, S]
  auto storage = torch::zeros({K, 1, T, padded}, options);
  auto bias = storage.narrow(3, 0, S);
  bias.masked_fill_(allowed.unsqueeze(1).logical_not(), -std::numeric_limits<double>::infinity());
  return bias.expand({K, heads, T, S});
}

RouteEntries route_entries(const torch::Tensor& weights, const std::vector<int64_t>& visible, torch::Device device) {
  TORCH_CHECK(weights.dim() == 2 && weights.size(0) == static_cast<int64_t>(visible.size()) && weights.is_cpu() &&
                  weights.scalar_type() == torch::kDouble,
              "memory attention: routing weights must be CPU float64 [", visible.size(), ", P], got ", weights.sizes(),
              " ", weights.scalar_type(), " on ", weights.device());
  const int64_t K = weights.size(0);
  auto w = weights.accessor<double, 2>();
  std::vector<std::vector<int64_t>> entries(static_cast<size_t>(K));
  int64_t E = 0;
  for (int64_t b = 0; b < K; ++b) {
    auto& row = entries[static_cast<size_t>(b)];
    for (int64_t e = 0; e < std::min(visible[static_cast<size_t>(b)], weights.size(1)); ++e)
      if (w[b][e] != 0.0) row.push_back(e);
    E = std::max<int64_t>(E, static_cast<int64_t>(row.size()));
  }
  auto index = torch::zeros({K, E}, torch::kLong);  // padding: entry 0 with weight 0
  auto weight = torch::zeros({K, E}, torch::kDouble);
  auto ia = index.accessor<int64_t, 2>();
  auto wa = weight.accessor<double, 2>();
  for (int64_t b = 0; b < K; ++b) {
    const auto& row = entries[static_cast<size_t>(b)];
    for (size_t j = 0; j < row.size(); ++j)
      ia[b][static_cast<int64_t>(j)] = row[j], wa[b][static_cast<int64_t>(j)] = w[b][row[j]];
  }
  return {index.to(device), weight.to(device)};
}

}  // namespace uio::model
