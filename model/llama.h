// model/llama.h — the Llama-family decoder (Llama-2/3, Mistral, Qwen2, SmolLM2) as libtorch modules:
// embedding, N x (RMSNorm, attention, residual, RMSNorm, SwiGLU MLP, residual), RMSNorm, LM head.
// Module names follow Hugging Face's, so `named_parameters()` yields HF tensor names. Owns the forward
// pass; weight files are read elsewhere (model/weights.h). Dims as in model/attention.h, V vocab.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "model/attention.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/lora.h"
#include "model/rope.h"

namespace uio::model {

class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps, const torch::TensorOptions& options);
  // Reference: HF's formula (normalised in float32, cast to x's dtype, then scaled). Fused: one
  // at::rms_norm call (normalised and scaled in float32, rounded once), forward and backward.
  torch::Tensor forward(const torch::Tensor& x, Kernels kernels = Kernels::reference);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

class MLPImpl : public torch::nn::Module {
 public:
  MLPImpl(const ModelConfig& config, const torch::TensorOptions& options);
  torch::Tensor forward(const torch::Tensor& x, const LayerLora* lora = nullptr);  // down(silu(gate(x)) * up(x))
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(MLP);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const ModelConfig& config, const torch::TensorOptions& options);
  // `attn_input`, when given, receives the post-RMSNorm input of the attention; with `stop_after`
  // the layer returns right after that (an encoder that keeps only these needs nothing more).
  torch::Tensor forward(const torch::Tensor& x, const AttentionContext& ctx, torch::Tensor* attn_input = nullptr,
                        bool stop_after = false);
  RMSNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(DecoderLayer);

// What a forward sees besides its token ids.
struct ForwardContext {
  // Positions of the new tokens, [T] or [B, T]; undefined means cache length + 0..T-1.
  torch::Tensor positions;
  KVCache* cache = nullptr;
  // Per-layer extra key/value entries before the sequence (empty = none); see AttentionPrefix.
  const std::vector<AttentionPrefix>* prefix = nullptr;
  // Boolean [T, S] or [B, 1, T, S] overriding default_attention_mask (true = may attend).
  torch::Tensor mask;
  // The adapter set active in this pass (none: the plain base model).
  const LoraSetImpl* lora = nullptr;
  // RoPE to use instead of the base model's (memory positions past the trained window), or the
  // tokens' cos/sin ([B or 1, T, D] float32) precomputed by the caller; `positions` is then unused.
  const Rope* rope = nullptr;
  torch::Tensor cos, sin;
  // When set, receives each layer's post-RMSNorm attention input at positions [capture_from, T);
  // the final layer then stops after its capture and forward_embeddings returns an undefined tensor.
  std::vector<torch::Tensor>* attn_inputs = nullptr;
  int64_t capture_from = 0;
  // Activation checkpointing (model/recompute.h): keep only each layer's inputs and recompute the
  // layer in the backward pass. Training only: not with a KV cache or attn_inputs.
  bool recompute_layers = false;
};

// The transformer body (HF's `model.*`).
class LlamaModelImpl : public torch::nn::Module {
 public:
  LlamaModelImpl(const ModelConfig& config, const torch::TensorOptions& options);
  // Final normalised hidden states [B, T, C] of input embeddings `x` [B, T, C].
  torch::Tensor forward_embeddings(const torch::Tensor& x, const ForwardContext& ctx = {});
  Kernels kernels() const { return kernels_; }
  void set_kernels(Kernels kernels) { kernels_ = kernels; }

  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RMSNorm norm{nullptr};
  const Rope& rope() const { return rope_; }

 private:
  ModelConfig config_;
  Rope rope_;
  Kernels kernels_ = Kernels::fused;
};
TORCH_MODULE(LlamaModel);

class CausalLMImpl : public torch::nn::Module {
 public:
  // Parameters in `options`' dtype and device, randomly initialised (HF's Llama init: normal, std
  // 0.02; norms one) — or, on the meta device, without storage, for weights a file supplies next.
  explicit CausalLMImpl(const ModelConfig& config, const torch::TensorOptions& options = {});
  // Logits [B, T, V] of token ids [B, T] (int64).
  torch::Tensor forward(const torch::Tensor& ids, const ForwardContext& ctx = {});
  // Final hidden states [B, T, C] (before the LM head).
  torch::Tensor hidden_states(const torch::Tensor& ids, const ForwardContext& ctx = {});
  // LM head over hidden states: [B, T, C] -> [B, T, V].
  torch::Tensor logits(const torch::Tensor& hidden);
  // The output embedding: lm_head's weight, or the token embedding when tied.
  torch::Tensor output_weight() const;
  // A KV cache for this model of `capacity` tokens, in the model's dtype and device.
  KVCache make_cache(int64_t batch, int64_t capacity) const;
  // How the forward and the loss run (model/attention.h, Kernels); fused unless set.
  Kernels kernels() const { return model->kernels(); }
  void set_kernels(Kernels kernels) { model->set_kernels(kernels); }

  const ModelConfig& config() const { return config_; }
  LlamaModel model{nullptr};
  Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  ModelConfig config_;
};
TORCH_MODULE(CausalLM);

}  // namespace uio::model
