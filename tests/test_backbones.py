"""Standard backbones: torchvision's state-dict layout, local weights, channel adaptation,
spectrogram images, and a teacher trained with a standard backbone through the stage CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from models.backbones import VIDEO_BACKBONES, build_backbone
from models.encoders import (
    KINETICS_MEAN,
    KINETICS_STD,
    BackboneEncoder,
    KineticsScaling,
    build_encoder,
    load_encoder_weights,
    video_input,
)
from models.timefreq import LogSpectrogram
from models.weights import adapt_stem_weight, file_sha256, load_backbone_weights
from pipeline_steps import train_modality_teacher as tmt
from pipeline_steps.fold_data import Normaliser
from pipeline_steps.shards import read_shard, write_shard

FIXTURE = Path(__file__).parent / "fixtures" / "torchvision_backbone_keys.json"
CLASSES = {"r3d_18": 400, "mc3_18": 400, "r2plus1d_18": 400, "resnet18": 1000}


def reference_keys() -> dict[str, dict[str, list[int]]]:
    """{model: {key: shape}} dumped from torchvision 0.29.1 (torch 2.14.1)."""
    return json.loads(FIXTURE.read_text())["models"]


def torchvision_like_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with torchvision's keys and shapes for ``name`` and random values."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in reference_keys()[name].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.05
    return state


@pytest.mark.parametrize("name", list(CLASSES))
def test_state_dict_keys_and_shapes_are_torchvisions(name: str) -> None:
    ours = build_backbone(name, 3, CLASSES[name]).state_dict()
    ref = reference_keys()[name]
    assert [(k, list(v.shape)) for k, v in ours.items()] == list(ref.items())
    headless = build_backbone(name, 3, None).state_dict()
    assert set(ref) - set(headless) == {"fc.weight", "fc.bias"}


@pytest.mark.parametrize("name", VIDEO_BACKBONES)
def test_video_backbone_forward_on_a_tiny_clip(name: str) -> None:
    torch.manual_seed(0)
    model = build_backbone(name, 3, 400).eval()
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert model(clip).shape == (1, 400)
        assert model.features(clip).shape == (1, 512)
        torch.testing.assert_close(model.fc(model.features(clip)), model(clip))


def test_resnet18_forward_on_a_spectrogram_image() -> None:
    model = build_backbone("resnet18", 1, None).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 33, 41)).shape == (2, 512)


@pytest.fixture(scope="module")
def mc3_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file laid out as torchvision's Kinetics-400 mc3_18 (the smallest video backbone)."""
    path = tmp_path_factory.mktemp("weights") / "mc3_18_kinetics.pt"
    torch.save(torchvision_like_state("mc3_18"), path)
    return path


def test_torchvision_file_loads_strictly_and_round_trips(mc3_file: Path) -> None:
    """A torchvision-layout file loads as is; through the params path it loads into a
    6-channel (frames+delta) teacher encoder whose stem is adapted: an input repeated in both
    halves gives the RGB backbone's features."""
    state = torchvision_like_state("mc3_18")
    full = build_backbone("mc3_18", 3, 400)
    full.load_state_dict(torch.load(mc3_file, weights_only=True), strict=True)
    for key, value in state.items():
        assert torch.equal(full.state_dict()[key], value), key
    cfg = {"embed_dim": 8, "width": 4, "backbones": {"video": "mc3_18"}}
    cfg["pretrained"] = {"video": str(mc3_file)}
    arch = tmt.architecture(cfg, "video")
    teacher = tmt.build_teacher("video", 6, arch, 2, "frames+delta")
    provenance = tmt.load_teacher_weights(teacher, cfg, "video")
    assert provenance == {"path": str(mc3_file), "sha256": file_sha256(mc3_file)}
    clip = torch.randn(2, 3, 4, 32, 32)
    full.eval(), teacher.eval()
    with torch.no_grad():
        got = teacher.encoder.backbone.features(torch.cat([clip, clip], 1))
        torch.testing.assert_close(got, full.features(clip), rtol=1e-4, atol=1e-5)


def test_missing_and_mismatched_files_are_clear_errors(tmp_path: Path, mc3_file: Path) -> None:
    cfg = {"embed_dim": 8, "width": 4, "backbones": {"video": "mc3_18"}}
    teacher = tmt.build_teacher("video", 3, tmt.architecture(cfg, "video"), 2)
    cfg["pretrained"] = {"video": str(tmp_path / "nowhere.pt")}
    with pytest.raises(SystemExit, match=r"pretrained\.video: .*not found: .*nowhere\.pt"):
        tmt.load_teacher_weights(teacher, cfg, "video")
    wrong = tmp_path / "resnet18_imagenet.pt"
    torch.save(torchvision_like_state("resnet18"), wrong)
    cfg["pretrained"] = {"video": str(wrong)}
    with pytest.raises(SystemExit) as err:
        tmt.load_teacher_weights(teacher, cfg, "video")
    text = str(err.value)
    assert "resnet18_imagenet.pt" in text
    assert "missing keys 102 ['stem.0.weight'" in text
    assert "unexpected keys 102 ['conv1.weight'" in text
    state = torch.load(mc3_file, weights_only=True)
    state["layer3.1.conv2.0.weight"] = torch.zeros(256, 256, 3, 3, 3)  # an r3d_18 kernel
    state["extra.weight"] = torch.zeros(1)
    odd = tmp_path / "odd.pt"
    torch.save(state, odd)
    with pytest.raises(
        ValueError,
        match=r"odd\.pt do not match VideoResNet: unexpected keys 1 "
        r"\['extra.weight'\]; shape mismatches 1 \['layer3.1.conv2.0.weight: file "
        r"\(256, 256, 3, 3, 3\) vs model \(256, 256, 1, 3, 3\)'\]",
    ):
        load_backbone_weights(teacher.encoder.backbone, odd)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt: not a readable torch weights file"):
        load_backbone_weights(teacher.encoder.backbone, junk)


def test_stem_adaptation_rule() -> None:
    w = torch.randn(4, 3, 7, 7)
    torch.testing.assert_close(adapt_stem_weight(w, 1), w.sum(1, keepdim=True))
    six = adapt_stem_weight(w, 6)
    torch.testing.assert_close(six, torch.cat([w, w], 1) / 2)
    assert adapt_stem_weight(w, 3) is w
    two = adapt_stem_weight(w, 2)
    torch.testing.assert_close(two, w[:, :2] * 1.5)


def test_one_channel_resnet18_sees_grey_as_the_rgb_model(tmp_path: Path) -> None:
    """ImageNet-layout weights in a 1-channel resnet18 (a spectrogram): a grey image gives the
    RGB model's output for that image in R, G and B."""
    path = tmp_path / "resnet18.pt"
    torch.save(torchvision_like_state("resnet18", seed=1), path)
    rgb = load_backbone_weights(build_backbone("resnet18", 3, None), path).eval()
    grey = load_backbone_weights(build_backbone("resnet18", 1, None), path).eval()
    x = torch.randn(2, 1, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)


def test_kinetics_scaling_of_frames_and_deltas() -> None:
    frames = torch.zeros(1, 2, 4, 4, 3, dtype=torch.uint8)
    frames[:, 1] = 255
    mean, std = torch.tensor(KINETICS_MEAN), torch.tensor(KINETICS_STD)
    x = KineticsScaling("frames+delta")(video_input(frames, "frames+delta"))
    torch.testing.assert_close(x[0, :3, 0, 0, 0], (0 - mean) / std)
    torch.testing.assert_close(x[0, :3, 1, 0, 0], (1 - mean) / std)
    torch.testing.assert_close(x[0, 3:, 0, 0, 0], torch.zeros(3))
    torch.testing.assert_close(x[0, 3:, 1, 0, 0], 1 / std)
    d = KineticsScaling("delta")(video_input(frames, "delta"))
    torch.testing.assert_close(d[0, :, 1, 0, 0], 1 / std)


def test_log_spectrogram_shape_and_frequency() -> None:
    spec = LogSpectrogram(n_fft=64, hop_length=8)
    t = torch.arange(320) / 64.0  # 5 s at 64 Hz, as the demo's physio windows
    tone = torch.sin(2 * torch.pi * 8.0 * t)
    x = torch.stack([tone, torch.randn(320)])[None]  # (1, 2, 320)
    img = spec(x)
    assert img.shape == (1, 2, 33, 41) == (1, *spec.output_shape(2, 320))
    assert int(img[0, 0, :, 5:-5].mean(1).argmax()) == 8  # 1 Hz per bin
    assert abs(float(img[0, 1, 2:-2].exp().mean()) - 1.0) < 0.3  # white noise: flat near 1
    torch.testing.assert_close(spec(x[:, :1]), img[:, :1])  # channels transformed on their own
    with pytest.raises(ValueError, match="too short"):
        spec(torch.randn(1, 1, 20))


def test_build_encoder_backbone_choices() -> None:
    torch.manual_seed(0)
    video = build_encoder("video", 8, 4, 6, backbone="mc3_18", video_mode="frames+delta")
    assert isinstance(video, BackboneEncoder)
    assert video.eval()(torch.randn(1, 6, 4, 32, 32)).shape == (1, 8)
    keys = set(video.state_dict())
    assert "backbone.stem.0.weight" in keys and "proj.weight" in keys
    assert not any(k.startswith("backbone.fc") for k in keys)
    signal = build_encoder("signal", 8, 4, 2, backbone="resnet18")
    assert signal.eval()(torch.randn(2, 2, 320)).shape == (2, 8)
    audio = build_encoder("audio", 8, 4, 1, backbone="resnet18")
    assert audio.eval()(torch.randn(2, 1, 64, 160)).shape == (2, 8)
    with pytest.raises(ValueError, match="allowed: small, resnet18"):
        build_encoder("signal", 8, 4, 1, backbone="r3d_18")
    with pytest.raises(ValueError, match="gives 6 channels, not 3"):
        build_encoder("video", 8, 4, 3, backbone="r3d_18", video_mode="frames+delta")


def test_small_encoder_pretrained_file_still_loads(tmp_path: Path) -> None:
    src = build_encoder("signal", 8, 4, 1)
    path = tmp_path / "small.pt"
    torch.save(src.state_dict(), path)
    dst = build_encoder("signal", 8, 4, 1)
    assert len(load_encoder_weights(dst, path)) == 64
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value)


def _tiny_project(root: Path, weights: Path) -> Path:
    """An index of 12 samples (4 subjects) and an EDA shard whose level follows the label."""
    rng = np.random.default_rng(0)
    subjects = np.repeat(["s1", "s2", "s3", "s4"], 3)
    labels = np.tile([0, 1, 0], 4)
    split = {"s1": "train", "s2": "train", "s3": "val", "s4": "test"}
    ids = [f"{s}-{i}" for i, s in enumerate(subjects)]
    results = root / "results" / "biovid"
    (results / "features").mkdir(parents=True)
    pd.DataFrame(
        {
            "sample_id": ids,
            "subject": subjects,
            "label": labels,
            "split_0": [split[s] for s in subjects],
            "split_1": [split[s] for s in subjects],
        }
    ).to_parquet(results / "index.parquet", index=False)
    signal = rng.normal(size=(12, 1, 320)).astype(np.float32) + labels[:, None, None]
    write_shard(
        results / "features/eda.parquet", ids, signal, array_column="signal", modality="eda"
    )
    params = {
        "run": {"datasets": ["biovid"], "results_dir": "results", "device": "cpu"},
        "datasets": {
            "biovid": {
                "layout": "biovid",
                "root": "data/none",
                "modalities": ["video", "eda"],
                "task": "classification",
            }
        },
        "index_dataset": {"n_folds": 2},
        "train_modality_teacher": {
            "epochs": 1,
            "batch_size": 4,
            "embed_dim": 8,
            "backbones": {"eda": "resnet18"},
            "pretrained": {"eda": str(weights)},
            "spectrogram": {"n_fft": 32, "hop_length": 16},
        },
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.slow  # one stage run with its MLflow store: ~10 s idle
def test_teacher_stage_trains_a_pretrained_resnet18_on_eda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "resnet18_imagenet.pt"
    torch.save(torchvision_like_state("resnet18"), weights)
    params = _tiny_project(tmp_path, weights)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    args = ["--params", str(params), "--dataset", "biovid", "--fold", "0", "--modality", "eda"]
    tmt.main(args)
    fold = tmp_path / "results/biovid/fold0"
    ckpt = torch.load(fold / "teachers/eda.pt", weights_only=True)
    assert ckpt["backbone"] == "resnet18"
    assert ckpt["spectrogram"] == {"n_fft": 32, "hop_length": 16}
    assert ckpt["pretrained"]["path"] == str(weights)
    # the checkpoint rebuilds the teacher that wrote the stored embeddings
    teacher = tmt.teacher_from_checkpoint(ckpt).eval()
    stored = torch.load(fold / "embeddings/eda.pt", weights_only=True)
    to_input = tmt.ModalityInput("eda", Normaliser.from_state(ckpt["normaliser"]))
    x = read_shard(tmp_path / "results/biovid/features/eda.parquet").array
    with torch.no_grad():
        torch.testing.assert_close(teacher.encoder(to_input(x)), stored["embeddings"])
    # the fine-tuned stem started from the summed ImageNet filters, then trained
    start = torchvision_like_state("resnet18")["conv1.weight"].sum(1, keepdim=True)
    assert not torch.equal(ckpt["state_dict"]["encoder.backbone.conv1.weight"], start)
    bad = yaml.safe_load(params.read_text())
    bad["train_modality_teacher"]["pretrained"]["eda"] = "weights/absent.pt"
    params.write_text(yaml.safe_dump(bad))
    with pytest.raises(SystemExit, match="weights/absent.pt"):
        tmt.main(args)
