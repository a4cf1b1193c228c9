"""BioVid samples.csv reading and physiological channel extraction on files in the exact layout."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline_steps.biovid import DatasetError, read_samples
from pipeline_steps.extract_physio import process_file

HEADER = "subject_id\tsubject_name\tclass_id\tclass_name\tsample_id\tsample_name\n"


def write_samples(root: Path, rows: list[tuple]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + ["\t".join(map(str, r)) + "\n" for r in rows]
    (root / "samples.csv").write_text("".join(lines))


def write_bio(path: Path, n_rows: int = 2816, rate: float = 512.0, flat: bool = False) -> None:
    t = np.arange(n_rows) / rate
    rng = np.random.default_rng(0)
    gsr = np.full(n_rows, 3.0) if flat else 3 + 0.2 * np.sin(2 * np.pi * 0.3 * t)
    ecg = np.sin(2 * np.pi * 1.2 * t) ** 15 + 0.01 * rng.standard_normal(n_rows)
    emg = 0.05 * rng.standard_normal(n_rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(
        {
            "time": (t * 1e6).round().astype(np.int64),
            "gsr": gsr,
            "ecg": ecg,
            "emg_trapezius": emg,
            "emg_corrugator": emg,
            "emg_zygomaticus": emg,
        }
    )
    table.to_csv(path, sep="\t", index=False)


def test_read_samples_keeps_classes_and_builds_paths(tmp_path: Path):
    write_samples(
        tmp_path,
        [
            (0, "071309_w_21", 0, "BL1", 0, "071309_w_21-BL1-001"),
            (0, "071309_w_21", 2, "PA2", 1, "071309_w_21-PA2-001"),
            (0, "071309_w_21", 4, "PA4", 2, "071309_w_21-PA4-001"),
        ],
    )
    table = read_samples(tmp_path, ["BL1", "PA4"])
    assert table["label"].tolist() == [0, 1]
    assert table["video"].iloc[1] == "video/071309_w_21/071309_w_21-PA4-001.mp4"
    assert table["biosignals"].iloc[0] == (
        "biosignals_filtered/071309_w_21/071309_w_21-BL1-001_bio.csv"
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ((0, "s1", 9, "PA9", 0, "s1-PA9-001"), "unknown class_name"),
        ((0, "../etc", 0, "BL1", 0, "x-BL1-001"), "outside the dataset root"),
        ((0, "s1", 0, "BL1", 0, "../../x"), "outside the dataset root"),
    ],
)
def test_read_samples_refuses_bad_rows(tmp_path: Path, row: tuple, message: str):
    write_samples(tmp_path, [row])
    with pytest.raises(DatasetError, match=message):
        read_samples(tmp_path, ["BL1", "PA4"])


def test_read_samples_errors_name_the_file(tmp_path: Path):
    with pytest.raises(DatasetError, match="no samples file: neither .*starting_point"):
        read_samples(tmp_path, ["BL1", "PA4"])
    write_samples(tmp_path, [(0, "s1", 2, "PA2", 0, "s1-PA2-001")])
    with pytest.raises(DatasetError, match="no sample of classes"):
        read_samples(tmp_path, ["BL1", "PA4"])


def test_process_file_cleans_windows_and_resamples(tmp_path: Path):
    path = tmp_path / "a_bio.csv"
    write_bio(path)
    for column in ("gsr", "ecg", "emg_trapezius"):
        out = process_file(path, column, [0.5, 5.5], 64)
        assert out.shape == (1, 320) and out.dtype == np.float32
        assert np.isfinite(out).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_rows": 1000}, "truncated"), ({"rate": 1000.0}, "sample rate"), ({"flat": True}, "flat")],
)
def test_process_file_refuses_bad_signals(tmp_path: Path, kwargs: dict, message: str):
    path = tmp_path / "bad_bio.csv"
    write_bio(path, **kwargs)
    with pytest.raises(DatasetError, match=message) as err:
        process_file(path, "gsr", [0.5, 5.5], 64)
    assert str(path) in str(err.value)


def test_process_file_refuses_missing_and_non_numeric(tmp_path: Path):
    with pytest.raises(DatasetError, match="not found"):
        process_file(tmp_path / "none_bio.csv", "gsr", [0.5, 5.5], 64)
    path = tmp_path / "nan_bio.csv"
    write_bio(path)
    text = path.read_text().splitlines()
    text[10] = "\t".join(text[10].split("\t")[:1] + [""] * 5)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(DatasetError, match="non-numeric or empty"):
        process_file(path, "gsr", [0.5, 5.5], 64)


def _physio_project(tmp_path: Path, policy: str, files: dict[str, str]) -> tuple[list[str], dict]:
    """An index of ``files`` (sample -> defect: '', 'flat', 'missing', 'short') and params."""
    import yaml

    from pipeline_steps.config import REPO_ROOT, load_params
    from pipeline_steps.layout import layout_for

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["run"]["results_dir"] = str(tmp_path / "results")
    raw["datasets"]["biovid"]["root"] = str(tmp_path / "data")
    raw["index_dataset"]["on_bad_sample"] = policy
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(tmp_path / "params.yaml")
    rel = {s: f"biosignals_filtered/s/{s}_bio.csv" for s in files}
    for sample, defect in files.items():
        if defect != "missing":
            kwargs = {"flat": defect == "flat", "n_rows": 1000 if defect == "short" else 2816}
            write_bio(tmp_path / "data" / rel[sample], **kwargs)
    index = pd.DataFrame({"sample_id": list(files), "biosignals": list(rel.values())})
    path = layout_for(params, "biovid").index
    path.parent.mkdir(parents=True)
    index.to_parquet(path)
    argv = ["--params", str(tmp_path / "params.yaml"), "--dataset", "biovid", "--modality", "eda"]
    return argv, params


def test_extract_physio_skips_and_records_bad_files(tmp_path: Path):
    """A file that went bad after indexing: skipped from the shard and recorded, or named."""
    from pipeline_steps import extract_physio
    from pipeline_steps.layout import layout_for
    from pipeline_steps.qc import read_report
    from pipeline_steps.shards import read_shard

    files = {"a": "", "b": "flat", "c": "missing", "d": "short"}
    argv, params = _physio_project(tmp_path / "skip", "skip", files)
    extract_physio.main(argv)
    layout = layout_for(params, "biovid")
    assert read_shard(layout.physio_shard("eda")).sample_ids == ["a"]
    report = read_report(layout)
    reasons = {e["sample_id"]: e for e in report["skipped"]}
    assert set(reasons) == {"b", "c", "d"}
    assert reasons["b"]["reason"] == "column gsr is a flat line"
    assert reasons["c"]["reason"] == "biosignal file not found"
    assert "truncated" in reasons["d"]["reason"]
    assert all(e["file"].endswith(f"{s}_bio.csv") for s, e in reasons.items())

    argv, _ = _physio_project(tmp_path / "error", "error", files)
    with pytest.raises(DatasetError, match=r"b_bio\.csv: column gsr is a flat line"):
        extract_physio.main(argv)
    argv, _ = _physio_project(tmp_path / "empty", "skip", {"b": "flat", "c": "missing"})
    with pytest.raises(DatasetError, match="no usable eda sample left"):
        extract_physio.main(argv)
