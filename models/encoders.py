"""Modality encoders (backbones) and the unimodal teacher wrapper.

All encoders are small residual CNNs whose size comes from arguments, so a CPU demo is
fast and real runs scale up by raising ``width`` and ``embed_dim``:

- ``VideoEncoder``: R(2+1)D-style 3D CNN over face clips (B, 3, T, H, W);
- ``SignalEncoder``: 1D CNN over physiological signals (B, C, L);
- ``AudioEncoder``: 2D CNN over log-mel spectrograms (B, 1, n_mels, frames).

``build_encoder(..., backbone=...)`` instead wraps a standard backbone of
:mod:`models.backbones` (``r3d_18``, ``mc3_18``, ``r2plus1d_18`` for video; ``resnet18`` for
signals, through a log spectrogram, and for audio) as a :class:`BackboneEncoder`.

Every encoder is per-sample: normalisation is GroupNorm (statistics of one sample only),
so an output never depends on the other samples of the batch, in train or eval mode.
Blocks are pre-activation residual blocks whose skip path carries the un-normalised
signal, so absolute amplitude (e.g. a tonic EDA level) reaches the embedding.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.backbones import FEATURE_DIM, IMAGE_BACKBONES, VIDEO_BACKBONES, build_backbone
from models.timefreq import LogSpectrogram
from models.weights import file_sha256, load_backbone_weights, load_strict, read_state_dict

ENCODER_KINDS: tuple[str, ...] = ("video", "signal", "audio")
VIDEO_INPUTS: tuple[str, ...] = ("frames", "delta", "frames+delta")


def frames_to_tensor(frames: Tensor) -> Tensor:
    """uint8 clips (B, T, H, W, 3) -> float (B, 3, T, H, W) scaled to [-1, 1]."""
    if frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (B, T, H, W, 3), got {tuple(frames.shape)}")
    x = frames.to(torch.float32) / 127.5 - 1.0
    return x.permute(0, 4, 1, 2, 3).contiguous()


def video_channels(mode: str) -> int:
    """Input channels of the video encoder for a ``video_input`` mode."""
    if mode not in VIDEO_INPUTS:
        raise ValueError(f"unknown video input {mode!r}; allowed: {', '.join(VIDEO_INPUTS)}")
    return 6 if mode == "frames+delta" else 3


def video_input(frames: Tensor, mode: str) -> Tensor:
    """uint8 clips (B, T, H, W, 3) -> encoder input (B, C, T, H, W) for ``mode``.

    ``frames``: the scaled frames; ``delta``: each frame minus the clip's first frame (the
    change of expression within the clip; a subject's static appearance cancels out);
    ``frames+delta``: both, stacked as 6 channels. Each clip is transformed on its own.
    """
    video_channels(mode)
    x = frames_to_tensor(frames)
    if mode == "frames":
        return x
    delta = x - x[:, :, :1]
    return delta if mode == "delta" else torch.cat([x, delta], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    """Per-sample GroupNorm with up to 8 groups."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def _conv(dims: int, cin: int, cout: int, kernel: int, stride: int | tuple[int, ...]) -> nn.Module:
    """Plain 1D/2D conv, or a factorised (2+1)D conv for ``dims == 3``."""
    if dims == 1:
        return nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    if dims == 2:
        return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    st, ss = (stride, stride) if isinstance(stride, int) else (stride[0], stride[1])
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv3d(cin, cout, (1, kernel, kernel), (1, ss, ss), (0, pad, pad), bias=False),
        _norm(cout),
        nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, (kernel, 1, 1), (st, 1, 1), (pad, 0, 0), bias=False),
    )


def _shortcut(dims: int, cin: int, cout: int, stride: int | tuple[int, ...]) -> nn.Module:
    strides = (stride,) * dims if isinstance(stride, int) else tuple(stride)
    if cin == cout and all(s == 1 for s in strides):
        return nn.Identity()
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return conv(cin, cout, 1, stride=strides, bias=False)


class _ResBlock(nn.Module):
    """Pre-activation residual block: (norm, relu, conv) x 2 plus an un-normalised skip."""

    def __init__(
        self, dims: int, cin: int, cout: int, kernel: int, stride: int | tuple[int, ...]
    ) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = _conv(dims, cin, cout, kernel, stride)
        self.norm2 = _norm(cout)
        self.conv2 = _conv(dims, cout, cout, kernel, 1)
        self.skip = _shortcut(dims, cin, cout, stride)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return self.skip(x) + h


class _ResidualEncoder(nn.Module):
    """Stem, three residual stages (width, 2 width, 4 width), global average pool, linear."""

    def __init__(
        self,
        dims: int,
        stem: nn.Module,
        width: int,
        embed_dim: int,
        kernel: int,
        strides: tuple[int | tuple[int, ...], ...],
    ) -> None:
        super().__init__()
        if width < 1 or embed_dim < 1:
            raise ValueError(f"width and embed_dim must be >= 1, got {width}, {embed_dim}")
        self.stem = stem
        chans = (width, width, 2 * width, 4 * width)
        self.stages = nn.Sequential(
            *(_ResBlock(dims, chans[i], chans[i + 1], kernel, strides[i]) for i in range(3))
        )
        self.proj = nn.Linear(4 * width, embed_dim)
        self.embed_dim = embed_dim
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.stages(self.stem(x)))
        return self.proj(h.flatten(2).mean(dim=2))


class VideoEncoder(_ResidualEncoder):
    """R(2+1)D-style encoder: (B, 3, T, H, W) face clips -> (B, embed_dim).

    Stem: spatial 7x7 conv with stride 4, then a temporal conv (112 px -> 28 px); stages
    at strides (1,1,1), (1,2,2), (2,2,2); global average pooling over time and space.
    """

    def __init__(self, embed_dim: int, width: int = 16, in_channels: int = 3) -> None:
        stem = nn.Sequential(
            nn.Conv3d(in_channels, width, (1, 7, 7), (1, 4, 4), (0, 3, 3), bias=False),
            _norm(width),
            nn.ReLU(inplace=True),
            nn.Conv3d(width, width, (3, 1, 1), 1, (1, 0, 0), bias=False),
        )
        super().__init__(3, stem, width, embed_dim, 3, ((1, 1, 1), (1, 2, 2), (2, 2, 2)))


class SignalEncoder(_ResidualEncoder):
    """1D CNN: (B, in_channels, L) signals -> (B, embed_dim); any L >= 1 (meant for L >= 32)."""

    def __init__(self, embed_dim: int, width: int = 16, in_channels: int = 1) -> None:
        stem = nn.Conv1d(in_channels, width, 7, stride=2, padding=3, bias=False)
        super().__init__(1, stem, width, embed_dim, 5, (1, 2, 2))


class AudioEncoder(_ResidualEncoder):
    """2D CNN: (B, in_channels, n_mels, frames) log-mel -> (B, embed_dim)."""

    def __init__(self, embed_dim: int, width: int = 16, in_channels: int = 1) -> None:
        stem = nn.Conv2d(in_channels, width, 5, stride=2, padding=2, bias=False)
        super().__init__(2, stem, width, embed_dim, 3, (1, 2, 2))


SMALL = "small"
BACKBONES: dict[str, tuple[str, ...]] = {
    "video": (SMALL, *VIDEO_BACKBONES),
    "signal": (SMALL, *IMAGE_BACKBONES),
    "audio": (SMALL, *IMAGE_BACKBONES),
}
# torchvision's Kinetics-400 input normalisation (per RGB channel, images in [0, 1]).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class KineticsScaling(nn.Module):
    """Video input in [-1, 1] (:func:`video_input`) -> torchvision's Kinetics normalisation.

    Frame channels: ``((x + 1) / 2 - mean) / std``; delta channels (a difference of two frames,
    so no mean): ``(x / 2) / std``. A fixed per-channel affine map; no state-dict keys.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        video_channels(mode)
        parts = {"frames": ("frames",), "delta": ("delta",)}.get(mode, ("frames", "delta"))
        std = torch.tensor(KINETICS_STD * len(parts))
        shift = torch.cat(
            [
                (0.5 - torch.tensor(KINETICS_MEAN)) / torch.tensor(KINETICS_STD)
                if p == "frames"
                else torch.zeros(3)
                for p in parts
            ]
        )
        self.register_buffer("scale", (0.5 / std).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class BackboneEncoder(nn.Module):
    """``prepare`` (input transform) -> standard backbone's pooled 512-d features -> linear.

    The projection to ``embed_dim`` gives every modality the same embedding size whatever
    its backbone. State-dict keys: ``backbone.*`` (torchvision's names, no ``fc``), ``proj.*``.
    """

    def __init__(self, backbone: nn.Module, embed_dim: int, prepare: nn.Module | None = None):
        super().__init__()
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        self.prepare = prepare if prepare is not None else nn.Identity()
        self.backbone = backbone
        self.proj = nn.Linear(FEATURE_DIM, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.backbone.features(self.prepare(x)))


def build_encoder(
    modality_kind: str,
    embed_dim: int,
    width: int,
    in_channels: int | None = None,
    backbone: str = SMALL,
    spectrogram: dict | None = None,
    video_mode: str = "frames",
) -> nn.Module:
    """Encoder for a modality kind ("video", "signal", "audio").

    ``in_channels``: signal channels, spectrogram channels, or video input channels (3, or 6
    for ``video_input`` "frames+delta"); None = 3 for video, else 1. ``backbone``: ``small``
    (the CNNs above, sized by ``width``) or a standard one allowed for the kind
    (:data:`BACKBONES`; ``width`` is then unused). A standard video backbone gets its input
    scaled as for Kinetics (``video_mode`` says which channels are deltas); a signal goes
    through :class:`~models.timefreq.LogSpectrogram` (``spectrogram``: its ``n_fft`` and
    ``hop_length``) to ``resnet18``; audio log-mel goes to ``resnet18`` as is.
    """
    if modality_kind not in BACKBONES:
        raise ValueError(
            f"unknown modality kind {modality_kind!r}; allowed: {', '.join(ENCODER_KINDS)}"
        )
    if backbone not in BACKBONES[modality_kind]:
        allowed = ", ".join(BACKBONES[modality_kind])
        raise ValueError(f"backbone {backbone!r} not for {modality_kind}; allowed: {allowed}")
    channels = in_channels or (3 if modality_kind == "video" else 1)
    if backbone == SMALL:
        small = {"video": VideoEncoder, "signal": SignalEncoder, "audio": AudioEncoder}
        return small[modality_kind](embed_dim, width, channels)
    prepare: nn.Module | None = None
    if modality_kind == "video":
        if channels != video_channels(video_mode):
            raise ValueError(
                f"video_input {video_mode!r} gives {video_channels(video_mode)} "
                f"channels, not {channels}"
            )
        prepare = KineticsScaling(video_mode)
    elif modality_kind == "signal":
        prepare = LogSpectrogram(**(spectrogram or {}))
    return BackboneEncoder(build_backbone(backbone, channels, None), embed_dim, prepare)


def load_pretrained(module: nn.Module, path: str | Path) -> nn.Module:
    """Load a local state-dict file into ``module`` (strict); errors name the file."""
    return load_strict(module, read_state_dict(path), Path(path))


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> str:
    """Pretrained weights for an encoder; returns the file's SHA-256.

    A :class:`BackboneEncoder` reads a torchvision-format backbone file (stem adapted to the
    input channels, file's ``fc`` ignored: :func:`models.weights.load_backbone_weights`); a
    small encoder reads a file of its own ``state_dict()``.
    """
    if isinstance(encoder, BackboneEncoder):
        load_backbone_weights(encoder.backbone, path)
    else:
        load_pretrained(encoder, path)
    return file_sha256(path)


class ModalityTeacher(nn.Module):
    """Unimodal teacher: encoder + linear head. forward(x) -> (pred, embedding)."""

    def __init__(self, encoder: nn.Module, embed_dim: int, n_outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(embed_dim, n_outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        emb = self.encoder(x)
        return self.head(emb), emb
