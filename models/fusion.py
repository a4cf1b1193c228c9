"""Joint (fusion) teachers over per-modality embeddings.

Every fusion maps embeddings ``(B, M, D)`` (M modalities in a fixed order) to
``(pred (B, n_outputs), z (B, D))``; ``z`` is the joint embedding used for distillation.
Attention runs over the modality tokens of ONE sample (batch_first), never across the
batch, and no layer uses batch statistics: a sample's output does not depend on the other
samples of its batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FUSIONS: tuple[str, ...] = ("concat", "jca", "jmt")


class ModalityNorm(nn.Module):
    """LayerNorm of each modality's embedding with a per-modality affine (per sample)."""

    def __init__(self, n_modalities: int, embed_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_modalities, embed_dim))
        self.bias = nn.Parameter(torch.zeros(n_modalities, embed_dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


def _mlp(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    """Linear -> GELU -> dropout -> linear: the joint-embedding projection of the fusions."""
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
    )


def _check_input(x: Tensor, n_modalities: int, embed_dim: int) -> None:
    if x.ndim != 3 or x.shape[1] != n_modalities or x.shape[2] != embed_dim:
        raise ValueError(
            f"expected embeddings (B, {n_modalities}, {embed_dim}), got {tuple(x.shape)}"
        )


class ConcatFusion(nn.Module):
    """Concatenate the normalised modality embeddings, MLP to z, linear head."""

    def __init__(
        self,
        n_modalities: int,
        embed_dim: int,
        n_outputs: int,
        hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_modalities, self.embed_dim = n_modalities, embed_dim
        hidden = hidden or 2 * embed_dim
        self.norm = ModalityNorm(n_modalities, embed_dim)
        self.mlp = _mlp(n_modalities * embed_dim, hidden, embed_dim, dropout)
        self.head = nn.Linear(embed_dim, n_outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_input(x, self.n_modalities, self.embed_dim)
        z = self.mlp(self.norm(x).flatten(1))
        return self.head(z), z


class JCAFusion(nn.Module):
    """Joint cross-attention (METHOD Part 2, 9) on one clip-level token per modality.

    JCA with L = 1 (a sample is one clip-level vector per modality), generalised to M
    modalities. Per modality m (feature vector x_m in R^d after a linear encoder) and the
    joint representation J = [x_1; ...; x_M] in R^{M d}:

    - joint correlation  C_m = tanh(w_m x_m J^T / sqrt(M d))             (d x M d)
    - attention map      H_m = ReLU(x_m a_m^T + C_m W_cm)                 (d x att)
    - attended features  x^_m = H_m h_m + x_m                             (residual)

    so each modality's attention weights are guided by its correlation with the joint
    representation of all modalities. [x^_1; ...; x^_M] -> MLP -> z -> linear head.
    """

    def __init__(
        self,
        n_modalities: int,
        embed_dim: int,
        n_outputs: int,
        dim: int | None = None,
        att_dim: int = 32,
        hidden: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_modalities, self.embed_dim = n_modalities, embed_dim
        d = dim or min(embed_dim, 128)
        self.dim = d
        joint = n_modalities * d
        self.norm = ModalityNorm(n_modalities, embed_dim)
        self.encoders = nn.ModuleList(nn.Linear(embed_dim, d) for _ in range(n_modalities))
        self.w_joint = nn.Parameter(torch.ones(n_modalities))
        self.w_feat = nn.Parameter(torch.empty(n_modalities, att_dim))
        self.w_corr = nn.Parameter(torch.empty(n_modalities, joint, att_dim))
        self.w_out = nn.Parameter(torch.empty(n_modalities, att_dim))
        nn.init.normal_(self.w_feat, std=1.0 / math.sqrt(att_dim))
        nn.init.normal_(self.w_corr, std=1.0 / math.sqrt(joint))
        nn.init.normal_(self.w_out, std=1.0 / math.sqrt(att_dim))
        hidden = hidden or 2 * embed_dim
        self.mlp = _mlp(joint, hidden, embed_dim, dropout)
        self.head = nn.Linear(embed_dim, n_outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_input(x, self.n_modalities, self.embed_dim)
        x = self.norm(x)
        feats = torch.stack([enc(x[:, m]) for m, enc in enumerate(self.encoders)], dim=1)
        joint = feats.flatten(1)  # (B, M d)
        scale = 1.0 / math.sqrt(joint.shape[1])
        attended = []
        for m in range(self.n_modalities):
            xm = feats[:, m]  # (B, d)
            corr = torch.tanh(self.w_joint[m] * scale * xm[:, :, None] * joint[:, None, :])
            att = F.relu(xm[:, :, None] * self.w_feat[m] + corr @ self.w_corr[m])  # (B, d, att)
            attended.append(att @ self.w_out[m] + xm)
        z = self.mlp(torch.cat(attended, dim=1))
        return self.head(z), z


class _AttentionBlock(nn.Module):
    """Pre-LN transformer block over the tokens of each sample (batch_first)."""

    def __init__(self, dim: int, n_heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, ff_mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * dim, dim),
        )

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.norm1(tokens)  # (B, tokens, D): attention over dim 1 only
        tokens = tokens + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return tokens + self.ff(self.norm2(tokens))


class JMTFusion(nn.Module):
    """Joint multimodal transformer (METHOD Part 2, 10) on the tokens of one sample.

    Tokens: one per modality (linear projection + type embedding) and a joint token
    j = Linear([e_1; ...; e_M]). A key-based cross-attention block lets every token
    attend to the OTHER tokens (self masked out; generalises JMT's pairwise v<-a, a<-v,
    j<-v, v<-j, j<-a, a<-j to M modalities), then ``n_layers`` self-attention blocks
    over all tokens; z is the final joint token.
    """

    def __init__(
        self,
        n_modalities: int,
        embed_dim: int,
        n_outputs: int,
        n_heads: int = 2,
        n_layers: int = 1,
        ff_mult: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by n_heads {n_heads}")
        self.n_modalities, self.embed_dim = n_modalities, embed_dim
        self.norm = ModalityNorm(n_modalities, embed_dim)
        self.proj = nn.ModuleList(nn.Linear(embed_dim, embed_dim) for _ in range(n_modalities))
        self.joint = nn.Linear(n_modalities * embed_dim, embed_dim)
        self.type_emb = nn.Parameter(torch.randn(n_modalities + 1, embed_dim) * 0.02)
        self.cross = _AttentionBlock(embed_dim, n_heads, ff_mult, dropout)
        self.blocks = nn.ModuleList(
            _AttentionBlock(embed_dim, n_heads, ff_mult, dropout) for _ in range(n_layers)
        )
        self.out_norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, n_outputs)
        eye = torch.eye(n_modalities + 1, dtype=torch.bool)  # True = may not attend
        self.register_buffer("cross_mask", eye, persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        _check_input(x, self.n_modalities, self.embed_dim)
        x = self.norm(x)
        mods = torch.stack([p(x[:, m]) for m, p in enumerate(self.proj)], dim=1)
        tokens = torch.cat([mods, self.joint(x.flatten(1))[:, None]], dim=1) + self.type_emb
        tokens = self.cross(tokens, self.cross_mask)
        for block in self.blocks:
            tokens = block(tokens)
        z = self.out_norm(tokens[:, -1])
        return self.head(z), z


def build_fusion(
    name: str, n_modalities: int, embed_dim: int, n_outputs: int, **kw: object
) -> nn.Module:
    """Fusion by name ("concat", "jca", "jmt"); ``kw`` goes to its constructor."""
    classes = {"concat": ConcatFusion, "jca": JCAFusion, "jmt": JMTFusion}
    if name not in classes:
        raise ValueError(f"unknown fusion {name!r}; allowed: {', '.join(FUSIONS)}")
    if n_modalities < 1:
        raise ValueError(f"n_modalities must be >= 1, got {n_modalities}")
    return classes[name](n_modalities, embed_dim, n_outputs, **kw)
