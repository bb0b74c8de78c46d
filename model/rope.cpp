// model/rope.cpp — inverse frequencies per scaling kind, computed in float32 exactly as HF
// transformers' modeling_rope_utils does (so logits match bit for bit where the math allows).
#include "model/rope.h"

#include <cmath>

namespace uio::model {
namespace {

// 1 / base^(2i/D), i = 0..D/2-1, in float32.
torch::Tensor base_inv_freq(int64_t dim, double base) {
  auto exponent = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat) / static_cast<double>(dim);
  return 1.0 / torch::pow(base, exponent);
}

double yarn_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

// YaRN (arXiv 2309.00071): interpolate low frequencies, keep high ones, ramp in between.
torch::Tensor yarn_inv_freq(int64_t dim, double base, const RopeScaling& s, double* attention_scaling) {
  const double factor = s.factor;
  if (s.attention_factor)
    *attention_scaling = *s.attention_factor;
  else if (s.mscale != 0 && s.mscale_all_dim != 0)
    *attention_scaling = yarn_mscale(factor, s.mscale) / yarn_mscale(factor, s.mscale_all_dim);
  else
    *attention_scaling = yarn_mscale(factor, 1.0);

  const double original = static_cast<double>(s.original_max_position);
  auto correction_dim = [&](double rotations) {
    return dim * std::log(original / (rotations * 2 * M_PI)) / (2 * std::log(base));
  };
  double low = correction_dim(s.beta_fast), high = correction_dim(s.beta_slow);
  if (s.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp

  auto pos_freqs = torch::pow(base, torch::arange(0, dim, 2).to(torch::kFloat) / static_cast<double>(dim));
  auto extrapolation = 1.0 / pos_freqs;
  auto interpolation = 1.0 / (factor * pos_freqs);
  auto ramp = ((torch::arange(dim / 2, torch::kFloat) - low) / (high - low)).clamp(0, 1);
  auto extrapolation_factor = 1 - ramp;
  return interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
}

// Llama 3.1: divide low frequencies by `factor`, keep high ones, smooth in between.
torch::Tensor llama3_inv_freq(int64_t dim, double base, const RopeScaling& s) {
  auto inv_freq = base_inv_freq(dim, base);
  const double old_context = static_cast<double>(s.original_max_position);
  const double low_freq_wavelen = old_context / s.low_freq_factor;
  const double high_freq_wavelen = old_context / s.high_freq_factor;
  auto wavelen = 2 * M_PI / inv_freq;
  auto scaled = torch::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  auto smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  auto medium = (wavelen >= high_freq_wavelen).logical_and(wavelen <= low_freq_wavelen);
  return torch::where(medium, smoothed, scaled);
}

}  // namespace

Rope::Rope(int64_t head_dim, double theta, RopeScaling scaling, int64_t max_position)
    : head_dim_(head_dim), theta_(theta), scaling_(std::move(scaling)), max_position_(max_position) {
  TORCH_CHECK(head_dim_ > 0 && head_dim_ % 2 == 0, "rope: head_dim must be even and > 0, got ", head_dim_);
  const auto& type = scaling_.type;
  if (scaling_.original_max_position <= 0) scaling_.original_max_position = max_position_;
  if (type == RopeKind::none || type == RopeKind::dynamic) {
    inv_freq_ = base_inv_freq(head_dim_, theta_);
  } else if (type == RopeKind::ntk) {
    // NTK-aware (fixed): stretch the base so the longest wavelength grows by `factor`.
    const double d = static_cast<double>(head_dim_);
    inv_freq_ = base_inv_freq(head_dim_, theta_ * std::pow(scaling_.factor, d / (d - 2)));
  } else if (type == RopeKind::linear) {
    inv_freq_ = base_inv_freq(head_dim_, theta_) / scaling_.factor;
  } else if (type == RopeKind::yarn) {
    inv_freq_ = yarn_inv_freq(head_dim_, theta_, scaling_, &attention_scaling_);
  } else if (type == RopeKind::llama3) {
    inv_freq_ = llama3_inv_freq(head_dim_, theta_, scaling_);
  } else {
    TORCH_CHECK(false, "rope: unknown scaling kind ", static_cast<int>(type));
  }
}

torch::Tensor Rope::inv_freq(int64_t seq_len) const {
  if (scaling_.type != RopeKind::dynamic || seq_len <= max_position_) return inv_freq_;
  // Dynamic NTK: grow the base with the sequence so the longest wavelength still spans it.
  const double d = static_cast<double>(head_dim_);
  const double base = theta_ * std::pow(scaling_.factor * seq_len / max_position_ - (scaling_.factor - 1), d / (d - 2));
  return base_inv_freq(head_dim_, base);
}

std::pair<torch::Tensor, torch::Tensor> Rope::cos_sin(const torch::Tensor& positions, int64_t seq_len) const {
  TORCH_CHECK(positions.dim() == 1 || positions.dim() == 2, "rope: positions must be [T] or [B, T], got ",
              positions.sizes());
  auto pos = positions.dim() == 1 ? positions.unsqueeze(0) : positions;  // [B, T]
  // Only dynamic NTK needs the length (a host sync); the other kinds have fixed frequencies.
  const bool dynamic = scaling_.type == RopeKind::dynamic && pos.numel() > 0;
  auto freq = (dynamic ? inv_freq(seq_len > 0 ? seq_len : pos.max().item<int64_t>() + 1) : inv_freq_).to(pos.device());
  auto angles = pos.to(torch::kFloat).unsqueeze(-1) * freq;  // [B, T, D/2]
  auto emb = torch::cat({angles, angles}, -1);  // [B, T, D]
  return {emb.cos() * attention_scaling_, emb.sin() * attention_scaling_};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto c = cos.to(x.scalar_type()).unsqueeze(1);  // [B, 1, T, D]
  auto s = sin.to(x.scalar_type()).unsqueeze(1);
  auto rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * c + rotated * s;
}

torch::Tensor apply_rope_rolled(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin) {
  return torch::addcmul(x * cos.unsqueeze(1), x.roll(x.size(-1) / 2, -1), signed_sin.unsqueeze(1));
}

std::pair<torch::Tensor, torch::Tensor> rope_tables(const torch::Tensor& cos, const torch::Tensor& sin,
                                                    torch::ScalarType dtype) {
  const int64_t half = sin.size(-1) / 2;
  auto signed_sin = torch::cat({-sin.narrow(-1, 0, half), sin.narrow(-1, half, half)}, -1);
  return {cos.to(dtype), signed_sin.to(dtype)};
}

}  // namespace uio::model
