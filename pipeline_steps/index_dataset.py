"""Index a dataset: samples, subjects, labels and subject-independent folds -> index.parquet.

BioVid (:mod:`pipeline_steps.biovid`): one row per sample, ``label``, ``test_fold`` and
``split_<k>`` (:func:`pipeline_steps.folds.assign_folds`; LOSO by ``index_dataset.loso``).
Every sample is validated up front (:mod:`pipeline_steps.qc` explains why): its video exists,
opens, reports a frame rate and (``check_videos``) holds enough frames for
``crop_faces.window_s``; its biosignal file exists and each channel of
``extract_physio.channels`` is numeric, without NaN, not flat, at 512 Hz and long enough for
the physio window. With ``on_bad_sample: skip`` bad samples are left out of the index and
listed in ``qc_report.json``; with ``error`` the first one stops the step.

Aff-Wild2 (:mod:`pipeline_steps.affwild2`): one row per window of T frames, one fold
(``split_<k>``, k < n_folds: the validation people re-carved, the test set fixed).

A data problem (``DatasetError``) ends the step with exit code 1 and one line naming the file
and the problem (:func:`pipeline_steps.dataset_error.run_step`).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import pandas as pd

from pipeline_steps.affwild2 import assign_split, read_windows
from pipeline_steps.atomic import atomic_path
from pipeline_steps.biovid import check_biosignals, read_samples
from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.dataset_error import DatasetError, run_step
from pipeline_steps.folds import assign_folds
from pipeline_steps.layout import layout_for
from pipeline_steps.qc import QcLog


def check_video(path: Path, window_s: list[float] | None) -> None:
    """The video opens, has a frame rate and (if ``window_s``) frames up to the window end."""
    if not path.is_file():
        raise DatasetError(f"{path}: video file not found")
    if window_s is None:
        return
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DatasetError(f"{path}: OpenCV cannot open the video (corrupt or unsupported)")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if not math.isfinite(fps) or fps <= 0:
            raise DatasetError(f"{path}: the video reports no valid frame rate ({fps})")
        needed = int(round(window_s[1] * fps))
        if count < needed:
            raise DatasetError(
                f"{path}: {count} frames ({count / fps:.2f} s), window up to {window_s[1]} s "
                f"needs {needed} (truncated?)"
            )
        cap.set(cv2.CAP_PROP_POS_FRAMES, needed - 1)
        if not cap.grab():
            raise DatasetError(f"{path}: frame {needed - 1} cannot be decoded (truncated?)")
    finally:
        cap.release()


def _physio_window(params: dict) -> list[float]:
    window = params["extract_physio"]["window_s"]
    return [float(v) for v in (params["crop_faces"]["window_s"] if window == "video" else window)]


def physio_columns(params: dict, ds: dict) -> list[str]:
    channels = params["extract_physio"]["channels"]
    return [channels[m] for m in ds["modalities"] if m in channels]


def build_biovid(ds: dict, params: dict, qc: QcLog) -> pd.DataFrame:
    cfg = params["index_dataset"]
    root = Path(ds["root"])
    samples = read_samples(
        root, ds["classes"], biosignals=ds["biosignals"], qc=qc, samples_file=ds.get("samples_file")
    )
    columns = physio_columns(params, ds)
    window = params["crop_faces"]["window_s"] if cfg["check_videos"] else None
    keep = []
    for row in samples.itertuples(index=False):
        try:
            check_video(root / row.video, window)
            if columns:
                check_biosignals(root / row.biosignals, columns, _physio_window(params))
        except DatasetError as err:
            qc.bad(row.sample_id, err)
            continue
        keep.append(row.sample_id)
    samples = samples[samples["sample_id"].isin(keep)].reset_index(drop=True)
    if samples.empty:
        raise DatasetError(f"{root}: no usable sample left after quality control")
    return assign_folds(
        samples, cfg["n_folds"], cfg["n_val_subjects"], cfg["seed"], loso=cfg["loso"]
    )


def build_index(ds: dict, params: dict, qc: QcLog | None = None) -> pd.DataFrame:
    """The index table of one dataset (see the module docstring for the columns)."""
    qc = qc or QcLog("index_dataset", params["index_dataset"].get("on_bad_sample", "error"))
    if ds["layout"] == "biovid":
        return build_biovid(ds, params, qc)
    if ds["layout"] == "affwild2":
        windows = read_windows(Path(ds["root"]), ds, qc)
        cfg = params["index_dataset"]
        return assign_split(windows, ds["val_fraction"], cfg["seed"], cfg["n_folds"])
    raise DatasetError(f"layout {ds['layout']!r}: no loader (biovid, affwild2)")


def main(argv: list[str] | None = None) -> None:
    args = step_parser(__doc__).parse_args(argv)
    params = load_params(args.params)
    ds = dataset_params(params, args.dataset)
    layout = layout_for(params, args.dataset)
    qc = QcLog("index_dataset", params["index_dataset"]["on_bad_sample"])
    index = build_index(ds, params, qc)
    with atomic_path(layout.index) as tmp:
        index.to_parquet(tmp, index=False)
    qc.write(layout)
    tested = index[index["test_fold"] >= 0]
    counts = tested.groupby("test_fold")["subject"].nunique().tolist()
    print(
        f"[index_dataset] {args.dataset}: {len(index)} samples, "
        f"{index['subject'].nunique()} subjects, test subjects per fold {counts}, "
        f"{len(qc.skipped)} skipped -> {layout.index}"
    )


if __name__ == "__main__":
    run_step("index_dataset", main)
