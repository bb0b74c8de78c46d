"""Reference AdamW steps for tests/optimizer_test.cpp, computed by PyTorch's torch.optim.AdamW (never by
uio): a random matrix "w" (weight decay 0.1) and vector "b" (no decay), 5 steps of random gradients, each
clipped by torch.nn.utils.clip_grad_norm_(max_norm=1.0) before torch.optim.AdamW's step with that step's
learning rate; betas (0.9, 0.95), eps 1e-8.

out_dir/adamw.safetensors:
  w, b                  parameters before the first step (float32)
  grad.K.w, grad.K.b    gradients of step K (before clipping), K = 0..4
  after.K.w, after.K.b  parameters after step K
  lr                    [5] float64, the learning rate of each step
  norm                  [5] float32, the total gradient norm clip_grad_norm_ returned (clipping binds where > 1)
"""
import pathlib

import torch
from safetensors.torch import save_file

STEPS = 5
# Gradient scales: the total norm is about 6.5x the scale (42 elements), so clipping binds on steps 0, 2, 4.
GRAD_SCALES = [3.0, 0.05, 2.0, 0.1, 5.0]


def main(out_dir: pathlib.Path) -> None:
    g = torch.Generator().manual_seed(20240607)
    w = torch.randn(5, 7, generator=g).requires_grad_()
    b = torch.randn(7, generator=g).requires_grad_()
    out = {"w": w.detach().clone(), "b": b.detach().clone()}
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    lrs = (0.01 + 0.04 * torch.rand(STEPS, generator=g)).double()
    norms = []
    for k in range(STEPS):
        gw = torch.randn(5, 7, generator=g) * GRAD_SCALES[k]
        gb = torch.randn(7, generator=g) * GRAD_SCALES[k]
        out[f"grad.{k}.w"], out[f"grad.{k}.b"] = gw.clone(), gb.clone()
        w.grad, b.grad = gw, gb
        norms.append(float(torch.nn.utils.clip_grad_norm_([w, b], max_norm=1.0)))
        for group in opt.param_groups:
            group["lr"] = float(lrs[k])
        opt.step()
        opt.zero_grad(set_to_none=True)
        out[f"after.{k}.w"], out[f"after.{k}.b"] = w.detach().clone(), b.detach().clone()
    out["lr"] = lrs
    out["norm"] = torch.tensor(norms, dtype=torch.float32)
    assert any(n > 1 for n in norms) and any(n < 1 for n in norms), norms
    save_file(out, str(out_dir / "adamw.safetensors"))
