"""Encoders, pretrained loading, unimodal teacher, freezing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.encoders import (
    AudioEncoder,
    ModalityTeacher,
    SignalEncoder,
    VideoEncoder,
    build_encoder,
    frames_to_tensor,
    load_pretrained,
    video_channels,
    video_input,
)
from models.freeze import assert_frozen, freeze, unfreeze


def _clips(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (n, 8, 112, 112, 3), dtype=torch.uint8, generator=gen)
    return frames_to_tensor(frames)


def test_frames_to_tensor_layout_and_range() -> None:
    frames = torch.zeros(2, 8, 112, 112, 3, dtype=torch.uint8)
    frames[0, 3, 5, 7] = torch.tensor([0, 128, 255], dtype=torch.uint8)
    x = frames_to_tensor(frames)
    assert x.shape == (2, 3, 8, 112, 112) and x.dtype == torch.float32
    assert x[0, :, 3, 5, 7].tolist() == pytest.approx([-1.0, 128 / 127.5 - 1, 1.0], abs=1e-6)
    assert x.min() >= -1.0 and x.max() <= 1.0
    with pytest.raises(ValueError):
        frames_to_tensor(torch.zeros(2, 8, 112, 112, dtype=torch.uint8))


def test_encoder_shapes_demo_sizes() -> None:
    torch.manual_seed(0)
    assert VideoEncoder(32, width=8)(_clips(2, 0)).shape == (2, 32)
    sig = SignalEncoder(32, width=8)
    for length in (32, 100, 320):
        assert sig(torch.randn(3, 1, length)).shape == (3, 32)
    assert SignalEncoder(16, width=8, in_channels=3)(torch.randn(2, 3, 64)).shape == (2, 16)
    assert AudioEncoder(24, width=8)(torch.randn(2, 1, 64, 101)).shape == (2, 24)


def test_build_encoder_kinds() -> None:
    assert isinstance(build_encoder("video", 16, 8), VideoEncoder)
    assert isinstance(build_encoder("signal", 16, 8, in_channels=2), SignalEncoder)
    assert isinstance(build_encoder("audio", 16, 8), AudioEncoder)
    with pytest.raises(ValueError, match="video, signal, audio"):
        build_encoder("lidar", 16, 8)


@pytest.mark.parametrize("kind", ["video", "signal", "audio"])
def test_encoder_batch_independence(kind: str) -> None:
    torch.manual_seed(1)
    enc = build_encoder(kind, 32, 8).eval()
    if kind == "video":
        x, other = _clips(4, 2), _clips(3, 3)
    elif kind == "signal":
        x, other = torch.randn(4, 1, 320) * 3, torch.randn(3, 1, 320) * 7 + 2
    else:
        x, other = torch.randn(4, 1, 64, 80), torch.randn(3, 1, 64, 80) * 5
    with torch.no_grad():
        alone = enc(x[1:2])[0]
        in_a = enc(x)[1]
        in_b = enc(torch.cat([other[:2], x[1:2], other[2:]]))[2]
    # identical up to float32 rounding of batch-size dependent conv kernels
    torch.testing.assert_close(in_a, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(in_b, alone, atol=1e-6, rtol=1e-5)


def test_modality_teacher_outputs() -> None:
    teacher = ModalityTeacher(SignalEncoder(16, width=8), 16, 3)
    pred, emb = teacher(torch.randn(5, 1, 64))
    assert pred.shape == (5, 3) and emb.shape == (5, 16)
    pred.sum().backward()
    assert all(p.grad is not None for p in teacher.parameters())


def test_load_pretrained_roundtrip_and_errors(tmp_path) -> None:
    torch.manual_seed(0)
    src, dst = SignalEncoder(16, width=8), SignalEncoder(16, width=8)
    path = tmp_path / "sig.pt"
    torch.save(src.state_dict(), path)
    assert load_pretrained(dst, path) is dst
    for key, value in src.state_dict().items():
        assert torch.equal(value, dst.state_dict()[key])
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pretrained(dst, tmp_path / "missing.pt")
    bad = tmp_path / "audio.pt"
    torch.save(AudioEncoder(16, width=8).state_dict(), bad)
    with pytest.raises(ValueError, match="audio.pt"):
        load_pretrained(dst, bad)
    wide = tmp_path / "wide.pt"
    torch.save(SignalEncoder(16, width=16).state_dict(), wide)
    with pytest.raises(ValueError, match="wide.pt"):
        load_pretrained(dst, wide)


def test_freeze_and_assert_frozen() -> None:
    backbone = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    with pytest.raises(AssertionError, match="not frozen"):
        assert_frozen(backbone)
    assert freeze(backbone) is backbone
    assert_frozen(backbone)
    assert not any(p.requires_grad for p in backbone.parameters())
    # a parent's train() must not put the frozen backbone back into train mode
    parent = nn.ModuleDict({"backbone": backbone, "head": nn.Linear(2, 2)})
    parent.train()
    assert parent.training and parent["head"].training
    assert_frozen(backbone)
    backbone.train()
    assert_frozen(backbone)
    # a trainable parameter or a submodule in train mode is caught
    backbone[2].weight.requires_grad_(True)
    with pytest.raises(AssertionError, match="weight"):
        assert_frozen(backbone)
    backbone[2].weight.requires_grad_(False)
    backbone[1].training = True
    with pytest.raises(AssertionError, match="train mode"):
        assert_frozen(backbone)
    unfreeze(backbone)
    assert backbone.training and all(p.requires_grad for p in backbone.parameters())
    backbone.eval()
    assert not backbone.training


def test_video_input_modes() -> None:
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 4, 8, 8, 3), generator=g, dtype=torch.uint8)
    x = video_input(frames, "frames")
    assert x.shape == (2, 3, 4, 8, 8)
    assert torch.allclose(x, frames_to_tensor(frames))
    delta = video_input(frames, "delta")
    assert delta.shape == (2, 3, 4, 8, 8)
    assert torch.all(delta[:, :, 0] == 0)  # the first frame is the clip's own reference
    assert torch.allclose(delta[:, :, 2], x[:, :, 2] - x[:, :, 0])
    both = video_input(frames, "frames+delta")
    assert both.shape[1] == video_channels("frames+delta") == 6
    assert torch.allclose(both, torch.cat([x, delta], 1))
    # a clip's input never depends on the other clips of the batch
    assert torch.allclose(video_input(frames[1:], "delta"), delta[1:])
    # a static clip (no change of expression) has zero delta whatever the subject looks like
    static = frames[:, :1].expand(-1, 4, -1, -1, -1)
    assert torch.all(video_input(static, "delta") == 0)
    with pytest.raises(ValueError, match="unknown video input"):
        video_input(frames, "optical_flow")


def test_video_encoder_takes_six_channel_input() -> None:
    enc = build_encoder("video", 16, 4, in_channels=video_channels("frames+delta")).eval()
    clip = video_input(torch.zeros(1, 4, 32, 32, 3, dtype=torch.uint8), "frames+delta")
    assert enc(clip).shape == (1, 16)
