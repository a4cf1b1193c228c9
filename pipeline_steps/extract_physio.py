"""Clean, window and resample one physiological channel per modality -> Parquet shard.

Per modality (``extract_physio.channels``: eda -> gsr, ecg -> ecg, emg -> emg_trapezius) the
BioVid column is cleaned with neurokit2 at the recording rate (EDA: ``eda_clean``, ECG:
``ecg_clean``, EMG: ``emg_clean`` then the ``emg_amplitude`` envelope, since burst energy is
what a low-rate encoder can use), cut to ``window_s`` and resampled to ``sample_rate_hz``.
Normalisation is NOT done here: statistics come from each fold's training subjects only and
are applied by the training steps.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import neurokit2 as nk
import numpy as np
import pandas as pd
from scipy.signal import resample_poly

from pipeline_steps.biovid import DatasetError, read_biosignals
from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.layout import layout_for
from pipeline_steps.shards import write_shard

UNITS = {"gsr": "uS", "ecg": "mV", "emg_trapezius": "mV (envelope)"}
EXPECTED_RATE_HZ = 512.0


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


def process_file(path: Path, column: str, window_s: list[float], out_rate: int) -> np.ndarray:
    """One sample's channel: checked, cleaned, windowed and resampled, shape (1, L)."""
    time_s, values = read_biosignals(path, [column])
    if len(time_s) < 2:
        raise DatasetError(f"{path}: too few rows ({len(time_s)})")
    rate = 1.0 / float(np.median(np.diff(time_s.to_numpy())))
    if abs(rate - EXPECTED_RATE_HZ) > 1.0:
        raise DatasetError(f"{path}: sample rate {rate:.1f} Hz, expected {EXPECTED_RATE_HZ:.0f}")
    start, end = window_s
    n_needed = int(round((end - start) * EXPECTED_RATE_HZ))
    first = int(round(start * EXPECTED_RATE_HZ))
    raw = values[column].to_numpy()
    if len(raw) < first + n_needed:
        raise DatasetError(
            f"{path}: {len(raw)} rows, the window {window_s} s needs {first + n_needed} "
            "(truncated?)"
        )
    if np.ptp(raw) == 0:
        raise DatasetError(f"{path}: column {column} is a flat line")
    cleaned = clean_channel(column, raw, EXPECTED_RATE_HZ)[first : first + n_needed]
    out = resample_poly(cleaned, out_rate, int(EXPECTED_RATE_HZ))
    if not np.isfinite(out).all():
        raise DatasetError(f"{path}: cleaning {column} produced non-finite values")
    return out[None, :].astype(np.float32)


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
    layout = layout_for(params, args.dataset)
    index = pd.read_parquet(layout.index)
    root = Path(ds["root"])
    signals = [
        process_file(root / rel, column, cfg["window_s"], cfg["sample_rate_hz"])
        for rel in index["biosignals"]
    ]
    out = layout.physio_shard(args.modality)
    write_shard(
        out,
        index["sample_id"].tolist(),
        np.stack(signals),
        array_column="signal",
        modality=args.modality,
        metadata={
            "sample_rate_hz": cfg["sample_rate_hz"],
            "channels": [column],
            "units": UNITS.get(column, "a.u."),
            "window_s": cfg["window_s"],
        },
    )
    print(f"[extract_physio] {args.dataset}/{args.modality}: {len(signals)} samples -> {out}")


if __name__ == "__main__":
    main()
