"""Clean, window and resample one physiological channel per modality -> Parquet shard.

Per modality (``extract_physio.channels``: eda -> gsr, ecg -> ecg, emg -> emg_trapezius) the
BioVid column is cleaned with neurokit2 at the recording rate (EDA: ``eda_clean``, ECG:
``ecg_clean``, EMG: ``emg_clean`` then the ``emg_amplitude`` envelope, since burst energy is
what a low-rate encoder can use), cut to ``window_s`` and resampled to ``sample_rate_hz``.
Normalisation is NOT done here: statistics come from each fold's training subjects only and
are applied by the training steps (``fold_data.Normaliser``, fitted on the fold's ``train``
split, applied to train, val and test), so no statistic of a validation or test subject leaks.

Derived channels (``extract_physio.derived``, modality -> list, default none) are stacked after
the cleaned channel, computed on the whole cleaned recording before windowing:

* gsr ``tonic`` / ``phasic``: ``nk.eda_phasic`` (high-pass split at 0.05 Hz), uS;
* ecg ``heart_rate``: R peaks (``nk.ecg_peaks``) -> instantaneous rate interpolated to every
  sample (``nk.signal_rate``), beats per minute.

Window: ``window_s`` is ``[start, end]`` in seconds from the recording start, or ``video`` to
take ``crop_faces.window_s`` so the physiology covers exactly the sampled face frames (the
BioVid video and biosignal files start together).

Bad input (missing file, unreadable or truncated CSV, NaN, flat line, wrong sample rate or
length) raises :class:`DatasetError` naming the file, or with ``index_dataset.on_bad_sample:
skip`` the sample is left out of the shard and recorded in ``qc_report.json``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from pipeline_steps.biovid import EXPECTED_RATE_HZ, DatasetError, check_biosignals
from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.layout import layout_for
from pipeline_steps.qc import QcLog
from pipeline_steps.shards import write_shard

UNITS = {"gsr": "uS", "ecg": "mV", "emg_trapezius": "mV (envelope)"}


def clean_channel(column: str, signal: np.ndarray, rate: float) -> np.ndarray:
    """neurokit2 cleaning for one BioVid column."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if column == "gsr":
            return np.asarray(nk.eda_clean(signal, sampling_rate=rate), dtype=np.float64)
        if column == "ecg":
            return np.asarray(nk.ecg_clean(signal, sampling_rate=int(rate)), dtype=np.float64)
        cleaned = nk.emg_clean(signal, sampling_rate=int(rate))
        return np.asarray(nk.emg_amplitude(cleaned), dtype=np.float64)


DERIVED = {"gsr": ("tonic", "phasic"), "ecg": ("heart_rate",)}
DERIVED_UNITS = {"tonic": "uS", "phasic": "uS", "heart_rate": "bpm"}


def derive(column: str, name: str, cleaned: np.ndarray, rate: float) -> np.ndarray:
    """One derived channel of a cleaned recording (same length and rate)."""
    if name not in DERIVED.get(column, ()):
        raise ValueError(f"no derived channel {name!r} for column {column!r} (have {DERIVED})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if column == "gsr":
            parts = nk.eda_phasic(cleaned, sampling_rate=int(rate), method="highpass")
            key = "EDA_Tonic" if name == "tonic" else "EDA_Phasic"
            return np.asarray(parts[key], dtype=np.float64)
        try:
            _, info = nk.ecg_peaks(cleaned, sampling_rate=int(rate))
            peaks = np.asarray(info["ECG_R_Peaks"])
            if len(peaks) < 2:
                raise ValueError(f"{len(peaks)} R peaks")
            hr = nk.signal_rate(peaks, sampling_rate=int(rate), desired_length=len(cleaned))
        except (ValueError, IndexError) as err:
            raise DatasetError(f"heart rate not computable ({err})") from err
        return np.asarray(hr, dtype=np.float64)


def resolve_window(params: dict) -> list[float]:
    """``extract_physio.window_s``, with ``video`` meaning ``crop_faces.window_s``."""
    window = params["extract_physio"]["window_s"]
    window = params["crop_faces"]["window_s"] if window == "video" else window
    return [float(v) for v in window]


def process_file(path: Path, column: str, window_s: list[float], out_rate: int) -> np.ndarray:
    """One sample's channel: checked, cleaned, windowed and resampled, shape (1, L)."""
    return process_channels(path, column, [], window_s, out_rate)


def process_channels(
    path: Path, column: str, derived: list[str], window_s: list[float], out_rate: int
) -> np.ndarray:
    """The cleaned channel plus its ``derived`` channels, shape (1 + len(derived), L)."""
    values = check_biosignals(path, [column], window_s, EXPECTED_RATE_HZ)
    start, end = window_s
    first = int(round(start * EXPECTED_RATE_HZ))
    n_needed = int(round((end - start) * EXPECTED_RATE_HZ))
    raw = values[column].to_numpy()
    cleaned = clean_channel(column, raw, EXPECTED_RATE_HZ)
    rows = [cleaned] + [derive(column, name, cleaned, EXPECTED_RATE_HZ) for name in derived]
    out = np.stack(
        [resample_poly(r[first : first + n_needed], out_rate, int(EXPECTED_RATE_HZ)) for r in rows]
    )
    if not np.isfinite(out).all():
        raise DatasetError(f"{path}: cleaning {column} produced non-finite values")
    return out.astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--modality", required=True, help="modality name, e.g. eda")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    ds = dataset_params(params, args.dataset)
    cfg = params["extract_physio"]
    if args.modality not in cfg["channels"]:
        raise SystemExit(f"modality {args.modality!r} not in extract_physio.channels")
    column = cfg["channels"][args.modality]
    derived = list(cfg["derived"].get(args.modality, []))
    unknown = [d for d in derived if d not in DERIVED.get(column, ())]
    if unknown:
        raise SystemExit(f"extract_physio.derived.{args.modality}: {unknown} not for {column}")
    window = resolve_window(params)
    layout = layout_for(params, args.dataset)
    index = pd.read_parquet(layout.index)
    root = Path(ds["root"])
    qc = QcLog(f"extract_physio-{args.modality}", params["index_dataset"]["on_bad_sample"])
    ids, signals = [], []
    for sample_id, rel in zip(index["sample_id"], index["biosignals"], strict=True):
        try:
            signals.append(
                process_channels(root / rel, column, derived, window, cfg["sample_rate_hz"])
            )
        except DatasetError as err:
            qc.bad(sample_id, err, root / rel)
            continue
        ids.append(sample_id)
    if not ids:
        raise DatasetError(f"{layout.index}: no usable {args.modality} sample left")
    out = layout.physio_shard(args.modality)
    write_shard(
        out,
        ids,
        np.stack(signals),
        array_column="signal",
        modality=args.modality,
        metadata={
            "sample_rate_hz": cfg["sample_rate_hz"],
            "channels": [column, *derived],
            "units": UNITS.get(column, "a.u."),
            "channel_units": [UNITS.get(column, "a.u."), *(DERIVED_UNITS[d] for d in derived)],
            "window_s": window,
        },
    )
    qc.write(layout)
    print(f"[extract_physio] {args.dataset}/{args.modality}: {len(ids)} samples -> {out}")


if __name__ == "__main__":
    from pipeline_steps.dataset_error import run_step

    run_step("extract_physio", main)
