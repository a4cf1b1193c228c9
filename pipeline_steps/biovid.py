"""BioVid Heat Pain (Part A/B) as distributed: samples.csv, video/, biosignals_filtered/.

``samples.csv`` is tab-separated with columns subject_id, subject_name, class_id, class_name,
sample_id, sample_name. Videos are ``video/<subject_name>/<sample_name>.mp4``; biosignals are
``biosignals_filtered/<subject_name>/<sample_name>_bio.csv`` (tab-separated, ``time`` in
microseconds, 512 Hz; Part B's extra facial EMG columns are read only when configured).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

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


class DatasetError(ValueError):
    """The dataset on disk does not match the expected layout."""


def _safe_name(value: str, what: str, source: Path) -> str:
    """A subject or sample name that stays inside the dataset root."""
    if not value or "/" in value or "\\" in value or value in (".", "..") or value.startswith("."):
        raise DatasetError(f"{source}: {what} {value!r} would resolve outside the dataset root")
    return value


def read_samples(root: Path, classes: list[str]) -> pd.DataFrame:
    """Read samples.csv, keep ``classes`` (label = position in ``classes``), add file paths."""
    path = Path(root) / "samples.csv"
    if not path.exists():
        raise DatasetError(f"{path}: samples.csv not found (is datasets.<name>.root right?)")
    table = pd.read_csv(path, sep="\t", dtype=str)
    missing = [c for c in SAMPLES_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}; found {list(table.columns)}")
    unknown = sorted(set(table["class_name"]) - set(CLASS_NAMES))
    if unknown:
        raise DatasetError(f"{path}: unknown class_name {unknown}; BioVid has {CLASS_NAMES}")
    table = table[table["class_name"].isin(classes)].copy()
    if table.empty:
        raise DatasetError(f"{path}: no sample of classes {classes} left after filtering")
    for col in ("subject_name", "sample_name"):
        table[col] = [_safe_name(v, col, path) for v in table[col]]
    table["label"] = table["class_name"].map({c: i for i, c in enumerate(classes)}).astype("int64")
    table["video"] = "video/" + table["subject_name"] + "/" + table["sample_name"] + ".mp4"
    table["biosignals"] = (
        f"{BIOSIGNAL_FOLDER}/" + table["subject_name"] + "/" + table["sample_name"] + "_bio.csv"
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
