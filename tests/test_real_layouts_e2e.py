"""End to end on datasets in their real on-disk layouts (``demo: false``), up to the report.

The demo writers make the media; each test then turns the folder into what a user copies:

- BioVid: no demo marker, ``samples.csv`` in ``starting_point/``, biosignal files with Part B's
  extra facial EMG columns (the EMG modality reads one of them);
- Aff-Wild2: no samples.csv and no marker, one video re-encoded as ``.avi``, the demo's
  two-person video (``_left``/``_right``), a video without a face, a malformed annotation line,
  one annotation file a line short of its video and one several lines long.

Each checks the index, ``qc_report.json``, the report's data section, and that touching an
input file makes ``snakemake -n`` list index_dataset again.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest

from pipeline_steps.affwild2 import read_annotation, window_starts
from pipeline_steps.config import validate_params
from pipeline_steps.demo_affwild2 import generate_affwild2_demo
from pipeline_steps.make_demo_data import MARKER, generate_biovid_demo
from pipeline_steps.qc import QcLog
from tests.conftest import snakemake, tiny_params, write_project

pytestmark = pytest.mark.slow
ONE_EPOCH = {
    "train_modality_teacher": {"epochs": 1, "batch_size": 8, "embed_dim": 8, "width": 4},
    "train_fusion_teacher": {"epochs": 1, "batch_size": 8},
    "align_teacher_pool": {"epochs": 1, "batch_size": 8, "adapter_hidden": 8},
    "train_student": {
        "epochs": 1,
        "batch_size": 8,
        "hidden": 8,
        "topk": 4,
        # one method: these tests check the data layouts, QC and the report's data section,
        # none of which depends on the methods (fewer student/evaluate jobs to run)
        "methods": ["mtpkdot"],
    },
}


def project(workdir: Path, name: str, ds: dict, **sections: dict) -> dict:
    params = tiny_params()
    params["run"]["datasets"] = [name]
    params["datasets"] = {name: ds}
    params["crop_faces"]["n_shards"] = 1
    for key, value in {**ONE_EPOCH, **sections}.items():
        params[key] = {**params.get(key, {}), **value}
    write_project(workdir, params)
    return params


def run_to_report(workdir: Path, name: str) -> None:
    out = snakemake(workdir, f"results/{name}/report.md", timeout=900)
    if out.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        pytest.fail(f"snakemake failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}\n{logs}")


def jobs_to_run(workdir: Path, name: str) -> str:
    out = snakemake(workdir, "-n", f"results/{name}/report.md")
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def change_last_line(path: Path) -> None:
    """Change a value in the file's last line (Snakemake skips an input that is newer than the
    output but has the checksum it recorded: touching is not changing)."""
    set_lines(path, lambda lines: [*lines[:-1], lines[-1] + "1"])


def data_section(workdir: Path, name: str) -> str:
    markdown = (workdir / f"results/{name}/report.md").read_text()
    assert "## Data and quality control" in markdown
    page = (workdir / f"results/{name}/report.html").read_text()
    assert "<h2>Data and quality control</h2>" in page
    assert f"results/{name}/qc_report.json" in markdown
    return markdown.split("## Data and quality control", 1)[1]


# --- BioVid -------------------------------------------------------------------------------------


def demo_cfg(**sizes: float) -> dict:
    """The validated make_demo_data section with ``sizes``."""
    raw = {"run": {}, "datasets": {"x": {"layout": "biovid", "root": "x"}}}
    return validate_params({**raw, "make_demo_data": sizes})["make_demo_data"]


def write_biovid(root: Path) -> None:
    generate_biovid_demo(root, demo_cfg(n_subjects=6, samples_per_class=2, frame_size=128))
    (root / MARKER).unlink()
    (root / "starting_point").mkdir()
    (root / "samples.csv").rename(root / "starting_point" / "samples.csv")
    for bio in sorted(root.glob("biosignals_filtered/*/*_bio.csv")):
        table = pd.read_csv(bio, sep="\t")
        table["emg_corrugator"] = table["emg_trapezius"] * 0.5 + 1.0
        table["emg_zygomaticus"] = table["emg_trapezius"] * -0.3
        table.to_csv(bio, sep="\t", index=False)


def test_biovid_copy_with_samples_in_starting_point(tmp_path: Path) -> None:
    root = tmp_path / "BioVid_PartA"
    write_biovid(root)
    workdir = tmp_path / "run"
    ds = {
        "layout": "biovid",
        "root": str(root),
        "demo": False,
        "classes": ["BL1", "PA4"],
        "modalities": ["video", "emg"],
        "video_input": "delta",
    }
    project(
        workdir,
        "mybiovid",
        ds,
        extract_physio={"channels": {"emg": "emg_corrugator"}},  # a Part B column
    )
    run_to_report(workdir, "mybiovid")
    results = workdir / "results/mybiovid"
    index = pd.read_parquet(results / "index.parquet")
    assert len(index) == 24 and index["subject"].nunique() == 6
    qc = json.loads((results / "qc_report.json").read_text())
    assert qc["n_skipped"] == 0  # every demo clip has a face: the face rule keeps them all
    section = data_section(workdir, "mybiovid")
    assert "24 of 24 indexed samples kept" in section
    assert "| BL1 | 12 | 12 |" in section and "| PA4 | 12 | 12 |" in section

    assert "index_dataset" not in jobs_to_run(workdir, "mybiovid")
    change_last_line(next(root.glob("biosignals_filtered/*/*_bio.csv")))
    assert "index_dataset" in jobs_to_run(workdir, "mybiovid")


# --- Aff-Wild2 ----------------------------------------------------------------------------------

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    done = subprocess.run(
        [FFMPEG, "-y", "-loglevel", "error", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def set_lines(path: Path, edit) -> None:  # noqa: ANN001
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def write_affwild2(root: Path) -> dict[str, str]:
    """The Aff-Wild2 demo as a VA-track copy (see the module docstring); returns the names."""
    generate_affwild2_demo(root, demo_cfg(affwild2_people=6, affwild2_seconds=4.0, frame_size=128))
    (root / MARKER).unlink()
    ann = root / "annotations" / "VA_Estimation_Challenge"
    train = sorted(p.stem for p in (ann / "Train_Set").glob("*.txt"))
    pair = next(v for v in train if v.endswith("_left"))[: -len("_left")]
    single = [v for v in train if not v.startswith(pair)]
    avi, short = single[0], single[1]
    mp4 = root / "videos" / f"{avi}.mp4"
    ffmpeg(
        "-i",
        str(mp4),
        "-c:v",
        "mjpeg",
        "-q:v",
        "4",
        "-c:a",
        "pcm_s16le",
        str(mp4.with_suffix(".avi")),
    )
    mp4.unlink()
    # no face: grey frames with a real audio track, annotated like the others
    faceless = "999-30-128x128"
    ffmpeg(
        "-i", str(root / "videos" / f"{short}.mp4"),
        "-f", "lavfi", "-i", "color=c=gray:s=128x128:r=25:d=4",
        "-map", "1:v", "-map", "0:a", "-c:v", "mpeg4", "-c:a", "copy", "-shortest",
        str(root / "videos" / f"{faceless}.mp4"),
    )  # fmt: skip
    (ann / "Train_Set" / f"{faceless}.txt").write_text(
        (ann / "Train_Set" / f"{avi}.txt").read_text()
    )
    set_lines(ann / "Train_Set" / f"{short}.txt", lambda lines: lines[:-1])  # one short
    val = sorted(p for p in (ann / "Validation_Set").glob("*.txt"))
    set_lines(val[0], lambda lines: lines + lines[-6:])  # six lines long
    labelled = [
        i for i, v in enumerate(val[1].read_text().splitlines()) if i > 20 and "-5" not in v
    ]
    bad_line = labelled[0]  # 0-based position = 1-based line number - 1
    set_lines(val[1], lambda lines: lines[:bad_line] + ["0.31;0.2"] + lines[bad_line + 1 :])
    return {
        "avi": avi,
        "pair": pair,
        "faceless": faceless,
        "malformed": val[1].stem,
        "line": bad_line + 1,
    }


def labelled_windows(labels: np.ndarray, size: int) -> list[int]:
    starts = window_starts(len(labels), size, size)
    return [s for s in starts if (labels[s : s + size] != -5.0).any()]


def test_affwild2_copy_without_samples_csv(tmp_path: Path) -> None:
    root = tmp_path / "Aff-Wild2"
    names = write_affwild2(root)
    workdir = tmp_path / "run"
    ds = {
        "layout": "affwild2",
        "root": str(root),
        "demo": False,
        "modalities": ["video", "audio"],
        "task": "regression",
        "window_frames": 16,
        "val_fraction": 0.5,  # two of four people: one may be the face-less one
    }
    # one training person per fold here, too few to cross-fit the teachers (the tiny
    # Aff-Wild2 run in conftest covers cross-fitting)
    project(
        workdir,
        "myaff",
        ds,
        index_dataset={"on_bad_sample": "skip"},
        align_teacher_pool={"cross_fit": 0},
    )
    run_to_report(workdir, "myaff")
    results = workdir / "results/myaff"
    ann = root / "annotations" / "VA_Estimation_Challenge"
    skip = QcLog("check", "skip")
    index = pd.read_parquet(results / "index.parquet")
    media = dict(zip(index["video"], index["media"], strict=False))
    assert media[names["avi"]].endswith(".avi")
    assert {f"{names['pair']}_left", f"{names['pair']}_right"} <= set(index["video"])
    labels = read_annotation(ann / "Validation_Set" / f"{names['malformed']}.txt", skip)
    frame = names["line"] - 2  # line 2 is frame 0
    assert labels[frame, 0] == -5.0 and (labels != -5.0).sum() > 50  # only that frame lost
    bad = index[index["video"] == names["malformed"]].set_index("start_frame")
    assert len(bad) == len(labelled_windows(labels, 16)) >= 5  # the video is kept
    start = frame // 16 * 16
    assert bad.loc[start, "valence"][frame - start] == -5.0
    qc = json.loads((results / "qc_report.json").read_text())
    line = [w for w in qc["warnings"] if w["reason"].startswith(f"line {names['line']}:")]
    assert len(line) == 1 and line[0]["file"].endswith(f"{names['malformed']}.txt")
    skipped = {e["sample_id"] for e in qc["skipped"]}
    faceless = set(index.loc[index["video"] == names["faceless"], "sample_id"])
    assert skipped == faceless and faceless  # every window of the face-less video, only those
    assert all(e["reason"].startswith("face found in 0%") for e in qc["skipped"])
    evaluated = json.loads((results / "fold0/eval/seed0/mtpkdot.json").read_text())
    assert evaluated["n"] == int((index["split_0"] == "test").sum())
    section = data_section(workdir, "myaff")
    assert f"| Train_Set | {names['faceless']} | {len(faceless)} | 0 |" in section
    assert "face found in #% of sampled frames" in section

    assert "index_dataset" not in jobs_to_run(workdir, "myaff")
    change_last_line(ann / "Train_Set" / f"{names['avi']}.txt")
    assert "index_dataset" in jobs_to_run(workdir, "myaff")
