"""Visual-only student on frozen video-encoder features."""

from __future__ import annotations

from torch import Tensor, nn


class Student(nn.Module):
    """MLP f_v -> z_s (the distilled embedding, teachers' dim) -> linear head.

    Per sample only (LayerNorm, no batch statistics). forward(f_v) -> (pred, z_s).
    """

    def __init__(
        self, in_dim: int, hidden: int, embed_dim: int, n_outputs: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, embed_dim),
        )
        self.head = nn.Linear(embed_dim, n_outputs)

    def forward(self, f_v: Tensor) -> tuple[Tensor, Tensor]:
        z_s = self.body(f_v)
        return self.head(z_s), z_s
