"""BioVid Heat Pain (Part A/B) as distributed: samples.csv, video/, biosignals_filtered/.

The samples file is ``datasets.<name>.samples_file`` (relative to the root); without it,
``samples.csv`` in the root or in ``starting_point/`` (as some copies of the corpus keep it).
``samples.csv`` is tab-separated with columns subject_id, subject_name, class_id, class_name,
sample_id, sample_name. Videos are ``video/<subject_name>/<sample_name>.mp4``; biosignals are
``biosignals_<filtered|raw>/<subject_name>/<sample_name>_bio.csv`` (``datasets.<name>.biosignals``;
tab-separated, ``time`` in microseconds, 512 Hz). Only the columns named in
``extract_physio.channels`` are read, so Part B's extra facial EMG columns (emg_corrugator,
emg_zygomaticus) are accepted and ignored unless a modality is mapped to one of them.

Options: ``datasets.<name>.classes`` keeps any subset of BL1, PA1..PA4 (label = position in the
list: BL1 vs PA4 by default, any pair, or all five). A row with a class name outside BioVid's
five, or a subject/sample name that would resolve outside the dataset root, is a bad sample
(error, or skipped and recorded per ``index_dataset.on_bad_sample``, :mod:`pipeline_steps.qc`).
An empty selection is always an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline_steps.dataset_error import DatasetError
from pipeline_steps.dataset_inputs import IndexInput
from pipeline_steps.qc import QcLog

CLASS_NAMES = ("BL1", "PA1", "PA2", "PA3", "PA4")
SAMPLES_COLUMNS = (
    "subject_id",
    "subject_name",
    "class_id",
    "class_name",
    "sample_id",
    "sample_name",
)
BIOSIGNAL_FOLDER = "biosignals_filtered"
EXPECTED_RATE_HZ = 512.0
BIOSIGNAL_FOLDERS = {"filtered": "biosignals_filtered", "raw": "biosignals_raw"}
SAMPLES_PLACES = ("samples.csv", "starting_point/samples.csv")


def samples_path(root: Path, samples_file: str | None = None) -> Path:
    """The samples file: ``samples_file`` under ``root``, else the first of
    :data:`SAMPLES_PLACES` that exists."""
    root = Path(root)
    if samples_file:
        path = root / samples_file
        if not path.is_file():
            raise DatasetError(f"{path}: samples file not found (datasets.<name>.samples_file)")
        return path
    for place in SAMPLES_PLACES:
        if (root / place).is_file():
            return root / place
    looked = " nor ".join(str(root / p) for p in SAMPLES_PLACES)
    raise DatasetError(
        f"{root}: no samples file: neither {looked} exists (is datasets.<name>.root right? "
        "another place: datasets.<name>.samples_file)"
    )


def index_inputs(root: Path, ds: dict) -> list[IndexInput]:
    """What a BioVid index is built from: the samples file, the videos, the biosignals."""
    root = Path(root)
    folder = BIOSIGNAL_FOLDERS.get(ds.get("biosignals", "filtered"), BIOSIGNAL_FOLDER)
    return [
        IndexInput(samples_path(root, ds.get("samples_file"))),
        IndexInput(root / "video", (".mp4",)),
        IndexInput(root / folder, (".csv",)),
    ]


def _safe_name(value: str, what: str, source: Path) -> str:
    """A subject or sample name that stays inside the dataset root."""
    if not value or "/" in value or "\\" in value or value in (".", "..") or value.startswith("."):
        raise DatasetError(f"{source}: {what} {value!r} would resolve outside the dataset root")
    return value


def read_samples(
    root: Path,
    classes: list[str],
    *,
    biosignals: str = "filtered",
    qc: QcLog | None = None,
    samples_file: str | None = None,
) -> pd.DataFrame:
    """Read the samples file, keep ``classes`` (label = position in ``classes``), add paths.

    ``qc`` decides what a bad row does (default: raise); ``biosignals`` is ``filtered`` or
    ``raw``; ``samples_file`` see :func:`samples_path`. Columns beyond the six are ignored.
    """
    qc = qc or QcLog("index_dataset")
    if biosignals not in BIOSIGNAL_FOLDERS:
        raise DatasetError(f"biosignals must be one of {sorted(BIOSIGNAL_FOLDERS)}: {biosignals!r}")
    folder = BIOSIGNAL_FOLDERS[biosignals]
    path = samples_path(root, samples_file)
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable samples.csv ({err})") from err
    missing = [c for c in SAMPLES_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; found {list(table.columns)}")
    keep = []
    for pos, row in enumerate(table.itertuples(index=False)):
        line = pos + 2  # header is line 1
        try:
            if row.class_name not in CLASS_NAMES:
                raise DatasetError(
                    f"{path}: line {line}: unknown class_name {row.class_name!r}; "
                    f"BioVid has {CLASS_NAMES}"
                )
            for col in ("subject_name", "sample_name"):
                _safe_name(getattr(row, col), col, path)
        except DatasetError as err:
            qc.bad(row.sample_name or f"line {line}", err, path)
            continue
        keep.append(pos)
    table = table.iloc[keep]
    table = table[table["class_name"].isin(classes)].copy()
    if table.empty:
        raise DatasetError(f"{path}: no sample of classes {classes} left after filtering")
    table["label"] = table["class_name"].map({c: i for i, c in enumerate(classes)}).astype("int64")
    table["video"] = "video/" + table["subject_name"] + "/" + table["sample_name"] + ".mp4"
    table["biosignals"] = (
        f"{folder}/" + table["subject_name"] + "/" + table["sample_name"] + "_bio.csv"
    )
    out = pd.DataFrame(
        {
            "sample_id": table["sample_name"],
            "subject": table["subject_name"],
            "class_name": table["class_name"],
            "label": table["label"],
            "video": table["video"],
            "biosignals": table["biosignals"],
        }
    )
    dupes = out["sample_id"][out["sample_id"].duplicated()].tolist()
    if dupes:
        raise DatasetError(f"{path}: duplicated sample_name {dupes[:3]}")
    return out.sort_values("sample_id").reset_index(drop=True)


def read_biosignals(path: Path, columns: list[str]) -> tuple[pd.Series, pd.DataFrame]:
    """Read one ``*_bio.csv``: time in seconds and the requested columns (float64)."""
    if not path.exists():
        raise DatasetError(f"{path}: biosignal file not found")
    try:
        table = pd.read_csv(path, sep="\t")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable biosignal CSV ({err})") from err
    missing = [c for c in ["time", *columns] if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; found {list(table.columns)}")
    values = table[columns].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        bad = values.columns[values.isna().any()].tolist()
        raise DatasetError(f"{path}: non-numeric or empty values in {bad}")
    return table["time"].astype("float64") / 1e6, values.astype("float64")


def check_biosignals(
    path: Path, columns: list[str], window_s: list[float], rate_hz: float = EXPECTED_RATE_HZ
) -> pd.DataFrame:
    """Read one ``*_bio.csv`` and check it covers ``window_s``: the sample rate (from ``time``),
    the length, and each column (numeric, no NaN, not a flat line). Returns the columns."""
    time_s, values = read_biosignals(path, columns)
    if len(time_s) < 2:
        raise DatasetError(f"{path}: too few rows ({len(time_s)})")
    rate = 1.0 / float(np.median(np.diff(time_s.to_numpy())))
    if abs(rate - rate_hz) > 1.0:
        raise DatasetError(f"{path}: sample rate {rate:.1f} Hz, expected {rate_hz:.0f}")
    needed = int(round(window_s[0] * rate_hz)) + int(round((window_s[1] - window_s[0]) * rate_hz))
    if len(values) < needed:
        raise DatasetError(
            f"{path}: {len(values)} rows, the window {list(window_s)} s needs {needed} (truncated?)"
        )
    for column in columns:
        if np.ptp(values[column].to_numpy()[:needed]) == 0:
            raise DatasetError(f"{path}: column {column} is a flat line")
    return values
