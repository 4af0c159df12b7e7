"""NV-Embed's latent-attention pooling, written afresh with the published parameter names.

Every token's last hidden state queries a trainable dictionary of latent vectors (cross-attention:
queries = tokens, keys/values = latents), goes through a GEGLU MLP, both with residuals, and the result
is mean-pooled over the positions of the pool mask (prompt tokens, instruction excluded), then
L2-normalised. Because each token attends only to the latents, padding cannot leak between tokens.

Names follow the checkpoint: `cross_attend_blocks.0.{norm,norm_context,fn.to_q,fn.to_kv,fn.to_out}`,
`cross_attend_blocks.1.{norm,fn.net.0,fn.net.2}` and `latents`. NV-Embed-v1's sizes: 512 latents of
4096, 8 heads of 4096 each (so the projections are 4096 -> 32768).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LatentAttentionSpec:
    """Sizes of NV-Embed's latent-attention pooling layer (MM-Embed's text side)."""

    hidden_dim: int = 4096  # width of the language model's hidden states (context of the attention)
    latent_dim: int = 4096
    num_latents: int = 512
    num_heads: int = 8
    head_dim: int = 4096
    ff_mult: int = 4
    normalize: bool = True


class _CrossAttention(nn.Module):
    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, query_dim, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.to_q(x)
        k, v = self.to_kv(context).chunk(2, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:  # (b, n, h*d) -> (b, h, n, d)
            return t.view(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2)

        out = nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))  # default scale d**-0.5
        return self.to_out(out.transpose(1, 2).reshape(batch, length, -1))


class _GEGLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gates = x.chunk(2, dim=-1)
        return x * nn.functional.gelu(gates)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult * 2), _GEGLU(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module, context_dim: int | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.norm = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if self.norm_context is not None:
            return self.fn(x, self.norm_context(context))
        return self.fn(x)


class LatentAttentionPooler(nn.Module):
    """NV-Embed's pooling: hidden states attend to trained latents, then a masked mean."""

    def __init__(self, spec: LatentAttentionSpec) -> None:
        super().__init__()
        self.spec = spec
        attention = _CrossAttention(spec.latent_dim, spec.hidden_dim, spec.num_heads, spec.head_dim)
        self.cross_attend_blocks = nn.ModuleList(
            [
                _PreNorm(spec.latent_dim, attention, context_dim=spec.hidden_dim),
                _PreNorm(spec.latent_dim, _FeedForward(spec.latent_dim, spec.ff_mult)),
            ]
        )
        self.latents = nn.Parameter(torch.empty(spec.num_latents, spec.latent_dim))

    def forward(self, hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        """(batch, length, dim) hidden states and (batch, length) 0/1 mask -> (batch, latent_dim)."""
        cross_attn, cross_ff = self.cross_attend_blocks
        latents = self.latents.unsqueeze(0).expand(hidden.shape[0], -1, -1)
        hidden = cross_attn(hidden, context=latents) + hidden
        hidden = cross_ff(hidden) + hidden
        mask = pool_mask.unsqueeze(-1).float()
        # float32 sum as in NV-Embed (mask.float() promotes the product)
        pooled = (hidden.float() * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        if self.spec.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled
