"""1-D signals -> 2-D time-frequency images for an image backbone (``resnet18``).

The physiological shards hold windows (N, C, L) at ``extract_physio.sample_rate_hz`` (demo:
C = 1 + derived channels, L = 5 s x 64 Hz = 320); after the fold's training-only
normalisation each channel becomes one image channel: the log power spectrogram
(B, C, n_fft // 2 + 1, 1 + L // hop_length). Audio shards already hold log-mel images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LOG_FLOOR = 1e-4  # added to the power before the log: bounds silent bins at log(1e-4) ~ -9.2


class LogSpectrogram(nn.Module):
    """(B, C, L) -> (B, C, n_fft // 2 + 1, 1 + L // hop_length) natural-log power.

    Short-time Fourier transform with a periodic Hann window of ``n_fft`` samples, frames
    centred on multiples of ``hop_length`` (signal reflected at both ends), power divided by
    the window's energy so a unit-variance white signal has a flat spectrum near 1 (log 0).
    Each sample and channel is transformed on its own. No parameters, so it adds no keys to a
    state dict.
    """

    def __init__(self, n_fft: int = 64, hop_length: int = 8) -> None:
        super().__init__()
        if n_fft < 2 or hop_length < 1:
            raise ValueError(f"need n_fft >= 2 and hop_length >= 1, got {n_fft}, {hop_length}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def output_shape(self, channels: int, length: int) -> tuple[int, int, int]:
        """Image shape (C, frequencies, frames) for signals of ``length`` samples."""
        return channels, self.n_fft // 2 + 1, 1 + length // self.hop_length

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3:
            raise ValueError(f"expected signals (B, C, L), got shape {tuple(x.shape)}")
        b, c, length = x.shape
        if length <= self.n_fft // 2:
            raise ValueError(f"signals of {length} samples are too short for n_fft {self.n_fft}")
        spec = torch.stft(
            x.reshape(b * c, length).float(),
            self.n_fft,
            hop_length=self.hop_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        power = spec.abs().square() / self.window.square().sum()
        return torch.log(power + LOG_FLOOR).reshape(b, c, *spec.shape[-2:])
