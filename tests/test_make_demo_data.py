"""Tests of the demo dataset generator (BioVid layout)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_steps import make_demo_data as demo
from pipeline_steps.config import REPO_ROOT, load_params

TINY = {
    "seed": 3,
    "n_subjects": 3,
    "samples_per_class": 2,
    "duration_s": 2.5,
    "fps": 25,
    "frame_size": 128,
    "sampling_rate_hz": 512,
    "face_effect": 1.0,
    "physio_effect": 1.0,
    "scenario": "label",
}
BIO_HEADER = ["time", "gsr", "ecg", "emg_trapezius", "emg_corrugator", "emg_zygomaticus"]


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "biovid"
    demo.generate_biovid_demo(root, dict(TINY))
    return root


def test_frame_and_row_counts() -> None:
    full = {"duration_s": 5.5, "fps": 25, "sampling_rate_hz": 512}
    assert demo.n_frames(full) == 138
    assert demo.n_rows(full) == 2816
    assert demo.n_frames(TINY) == 63 and demo.n_rows(TINY) == 1280


def test_samples_csv_layout(tiny: Path) -> None:
    text = (tiny / "samples.csv").read_text()
    assert text.splitlines()[0] == demo.SAMPLES_HEADER
    table = pd.read_csv(tiny / "samples.csv", sep="\t")
    assert len(table) == 3 * 2 * 2
    assert set(zip(table.class_id, table.class_name, strict=True)) == {(0, "BL1"), (4, "PA4")}
    assert table.sample_id.tolist() == list(range(len(table)))
    assert table.subject_name.nunique() == 3 and table.subject_id.nunique() == 3
    assert table.groupby(["subject_name", "class_name"]).size().eq(2).all()
    assert table.subject_name.str.fullmatch(r"\d{6}_[mw]_\d{2}").all()
    expected = table.subject_name + "-" + table.class_name + "-"
    assert all(n.startswith(e) for n, e in zip(table.sample_name, expected, strict=True))
    assert table.sample_name.str.fullmatch(r"\d{6}_[mw]_\d{2}-(BL1|PA4)-\d{3}").all()
    assert table.sample_name.is_unique


def test_files_and_formats(tiny: Path) -> None:
    table = pd.read_csv(tiny / "samples.csv", sep="\t")
    for row in table.itertuples():
        bio = tiny / "biosignals_filtered" / row.subject_name / f"{row.sample_name}_bio.csv"
        video = tiny / "video" / row.subject_name / f"{row.sample_name}.mp4"
        assert bio.is_file() and video.is_file()
        assert bio.read_text().splitlines()[0] == "\t".join(BIO_HEADER)
        signals = pd.read_csv(bio, sep="\t")
        assert len(signals) == 1280
        assert signals.time.dtype == np.int64
        assert signals.time.iloc[0] == 0
        assert np.allclose(np.diff(signals.time), 1e6 / 512, atol=1)
        assert signals.time.iloc[-1] == round(1279 * 1e6 / 512)
        assert np.isfinite(signals[BIO_HEADER[1:]].to_numpy()).all()
    cap = cv2.VideoCapture(str(video))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    cap.release()
    frames = _frames(video)
    assert len(frames) == 63
    assert frames[0].shape == (128, 128, 3)


def test_same_seed_same_bytes_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    demo.generate_biovid_demo(again, dict(TINY))
    assert _digests(again) == _digests(tiny)
    other = tmp_path / "other"
    demo.generate_biovid_demo(other, {**TINY, "seed": 4})
    ours, theirs = _digests(tiny), _digests(other)
    assert ours["samples.csv"] != theirs["samples.csv"]
    assert not set(ours.values()) & set(theirs.values())


# sha256 (first 16 hex digits) of every file the generator of commit 83c1dd9 (before the
# latent scenario) wrote for these settings, marker excluded; the label scenario must keep them.
LABEL_CONTROL = {
    "seed": 3,
    "n_subjects": 2,
    "samples_per_class": 1,
    "duration_s": 1.0,
    "fps": 25,
    "frame_size": 64,
    "sampling_rate_hz": 512,
    "face_effect": 1.0,
    "physio_effect": 1.0,
    "affwild2_people": 5,
    "affwild2_seconds": 2.0,
    "scenario": "label",
}
BIOVID_83C1DD9 = {
    "biosignals_filtered/082309_w_64/082309_w_64-BL1-001_bio.csv": "5be22d6552b953db",
    "biosignals_filtered/082309_w_64/082309_w_64-PA4-002_bio.csv": "2a3ae90e1ba6ac99",
    "biosignals_filtered/122009_m_53/122009_m_53-BL1-002_bio.csv": "9cbff5768cb6e704",
    "biosignals_filtered/122009_m_53/122009_m_53-PA4-001_bio.csv": "72ff68f760b76e2d",
    "samples.csv": "d80c265ffe77b8a3",
    "video/082309_w_64/082309_w_64-BL1-001.mp4": "fc9e36eabe77948d",
    "video/082309_w_64/082309_w_64-PA4-002.mp4": "25abb3ce3d7829f2",
    "video/122009_m_53/122009_m_53-BL1-002.mp4": "f99dae6e15282f0c",
    "video/122009_m_53/122009_m_53-PA4-001.mp4": "c9f3316281d72079",
}
AFFWILD2_83C1DD9 = {
    "annotations/VA_Estimation_Challenge/Train_Set/100-30-64x64.txt": "d0cbe0081359f36b",
    "annotations/VA_Estimation_Challenge/Train_Set/101-30-64x64_left.txt": "22f2f6f2fdb9d6e8",
    "annotations/VA_Estimation_Challenge/Train_Set/101-30-64x64_right.txt": "b51eaaee89568fb7",
    "annotations/VA_Estimation_Challenge/Validation_Set/103-30-64x64.txt": "7c35f282a7a29a9b",
    "annotations/VA_Estimation_Challenge/Validation_Set/104-30-64x64.txt": "a63385443ee33e77",
    "videos/100-30-64x64.mp4": "f6b769e2deeee08c",
    "videos/101-30-64x64.mp4": "46b7beabb9f54590",
    "videos/103-30-64x64.mp4": "d08450a46959136f",
    "videos/104-30-64x64.mp4": "992ae43612b63a96",
}


def _data_digests(root: Path) -> dict[str, str]:
    """Short digests of the data files (the marker names the generator's source: left out)."""
    return {k: v[:16] for k, v in _digests(root).items() if k != demo.MARKER}


def test_label_scenario_is_the_previous_generator_byte_for_byte(tmp_path: Path) -> None:
    from pipeline_steps.demo_affwild2 import generate_affwild2_demo

    demo.generate_biovid_demo(tmp_path / "biovid", dict(LABEL_CONTROL))
    assert _data_digests(tmp_path / "biovid") == BIOVID_83C1DD9
    generate_affwild2_demo(tmp_path / "affwild2", dict(LABEL_CONTROL))
    assert _data_digests(tmp_path / "affwild2") == AFFWILD2_83C1DD9
    latent = tmp_path / "latent"
    demo.generate_biovid_demo(latent, {**LABEL_CONTROL, "scenario": "latent"})
    ours = _data_digests(latent)
    assert ours["samples.csv"] == BIOVID_83C1DD9["samples.csv"]  # same subjects and samples
    videos = [k for k in ours if k.endswith(".mp4")]
    assert all(ours[k] != BIOVID_83C1DD9[k] for k in videos)  # the face follows the latent
    # a BL1 clip without a response keeps its physiology; the others change
    assert sum(ours[k] != BIOVID_83C1DD9[k] for k in ours if k.endswith("_bio.csv")) >= 2


def test_affwild2_latent_changes_only_the_annotations(tmp_path: Path) -> None:
    """Face and voice follow the felt state in both scenarios; only the rating differs."""
    from pipeline_steps.demo_affwild2 import generate_affwild2_demo

    generate_affwild2_demo(tmp_path, {**LABEL_CONTROL, "scenario": "latent"})
    ours = _data_digests(tmp_path)
    assert ours.keys() == AFFWILD2_83C1DD9.keys()
    for name, digest in AFFWILD2_83C1DD9.items():
        assert (ours[name] == digest) == name.startswith("videos/"), name


def test_affwild2_rating_is_the_felt_state_delayed_and_noisy() -> None:
    from pipeline_steps import demo_affwild2 as aw

    fps, n = 25.0, 1500
    felt = aw._traces(np.random.default_rng(0), n, fps)
    lags, residual_sd = [], []
    for seed in range(6):
        rating = aw.rated(felt, fps, np.random.default_rng(seed))
        assert rating.shape == felt.shape and np.abs(rating).max() <= 1.0
        corr = [np.corrcoef(rating[k:, 1], felt[: n - k, 1])[0, 1] for k in range(60)]
        lag = int(np.argmax(corr))
        lags.append(lag)
        assert corr[lag] > 0.6 and corr[lag] > corr[0]
        residual_sd.append((rating[lag:] - felt[: n - lag]).std(axis=0).mean())
    lo, hi = (fps * s for s in aw.RATER_LAG_S)
    assert all(lo - 3 <= k <= hi + 3 for k in lags)
    assert len(set(lags)) > 1  # the lag differs between videos
    assert 0.6 * aw.RATER_NOISE_SD < np.mean(residual_sd) < 1.4 * aw.RATER_NOISE_SD


def test_unknown_scenario_is_refused(tmp_path: Path) -> None:
    with pytest.raises(demo.DemoDataError, match="scenario is 'both'"):
        demo.generate_biovid_demo(tmp_path / "x", {**TINY, "scenario": "both"})


def _biosignal_table(cfg: dict) -> pd.DataFrame:
    """Per-sample physiology summaries, simulated directly (no video)."""
    rows = []
    for sample in demo.plan_samples(demo.make_subjects(cfg), cfg):
        sig = demo.simulate_biosignals(sample, cfg)
        ecg, rate = sig["ecg"], cfg["sampling_rate_hz"]
        peaks = [
            i
            for i in range(1, len(ecg) - 1)
            if ecg[i] > 0.5 * ecg.max() and ecg[i] >= ecg[i - 1] and ecg[i] > ecg[i + 1]
        ]
        rows.append(
            {
                "pain": sample.pain,
                "gsr": sig["gsr"].mean(),
                "hr": 60.0 * rate / np.median(np.diff(peaks)),
                "emg": np.sqrt(np.mean(sig["emg_trapezius"] ** 2)),
            }
        )
    return pd.DataFrame(rows)


def _response_table(cfg: dict) -> pd.DataFrame:
    """Per sample: label, latent response, EDA mean (centred per subject), facial cue."""
    rows = []
    for sample in demo.plan_samples(demo.make_subjects(cfg), cfg):
        response = demo.latent_response(sample, cfg)
        eda = demo.simulate_eda(sample, cfg, demo._rng(cfg["seed"], 2, sample.sample_id))
        cue = demo.cue_strength(sample, cfg, demo._rng(cfg["seed"], 3, sample.sample_id))
        rows.append(
            {
                "subject": sample.subject.index,
                "pain": sample.pain,
                "responder": response.responder,
                "intensity": response.intensity,
                "eda": eda.mean(),
                "cue": cue,
            }
        )
    table = pd.DataFrame(rows)
    table["eda"] -= table.groupby("subject").eda.transform("mean")
    return table


RESPONSE_CFG = {**TINY, "n_subjects": 8, "samples_per_class": 10, "seed": 11}


def test_latent_label_only_partly_predicts_the_response() -> None:
    table = _response_table({**RESPONSE_CFG, "scenario": "latent"})
    share = table.groupby("pain").responder.mean()
    assert 0.05 < share[0.0] < 0.3 and 0.65 < share[1.0] < 0.95
    responders = table[table.responder]
    assert (table.intensity[~table.responder] == 0).all()
    assert responders.intensity.between(demo.INTENSITY[2], demo.INTENSITY[3]).all()
    assert responders.intensity.std() > 0.15


def test_latent_physiology_and_face_follow_the_response_given_the_label() -> None:
    table = _response_table({**RESPONSE_CFG, "scenario": "latent"})
    for pain in (0.0, 1.0):
        same = table[table.pain == pain]
        by = same.groupby("responder")[["eda", "cue"]].mean()
        assert by.eda[True] - by.eda[False] > 1.0  # responders' EDA is higher, same label
        assert by.cue[True] > 0.3 > 0.1 > by.cue[False]  # and their face shows a grimace
        assert np.corrcoef(same.eda, same.cue)[0, 1] > 0.5
    responders = table[table.responder]
    assert np.corrcoef(responders.intensity, responders.eda)[0, 1] > 0.4
    assert np.corrcoef(responders.intensity, responders.cue)[0, 1] > 0.4
    # subtle: a responder's grimace is weaker than the label scenario's grimace
    label = _response_table({**RESPONSE_CFG, "scenario": "label"})
    assert responders.cue.mean() < 0.8 * label.cue[label.cue > 0.4].mean()


def test_label_scenario_physiology_is_independent_of_the_face_given_the_label() -> None:
    table = _response_table({**RESPONSE_CFG, "scenario": "label"})
    for pain in (0.0, 1.0):
        same = table[table.pain == pain]
        assert abs(np.corrcoef(same.eda, same.cue)[0, 1]) < 0.25
        assert abs(np.corrcoef(same.eda, same.intensity)[0, 1]) < 0.25  # the latent is unused
    means = table.groupby("pain").eda.mean()
    assert means[1.0] - means[0.0] > 1.0  # the label drives the physiology


def _threshold_accuracy(values: pd.Series, pain: pd.Series) -> float:
    """Accuracy of the midpoint-of-class-means threshold."""
    cut = 0.5 * (values[pain == 1].mean() + values[pain == 0].mean())
    return float(((values > cut) == (pain == 1)).mean())


def test_labels_drive_physiology_strongly() -> None:
    cfg = {**TINY, "n_subjects": 4, "samples_per_class": 4, "seed": 11}
    table = _biosignal_table(cfg)
    means = table.groupby("pain").mean()
    assert means.gsr[1.0] - means.gsr[0.0] > 1.0
    assert means.hr[1.0] - means.hr[0.0] > 8.0
    assert means.emg[1.0] > 2.0 * means.emg[0.0]
    assert _threshold_accuracy(table.gsr, table.pain) >= 0.8
    assert _threshold_accuracy(table.hr, table.pain) >= 0.75


def test_no_physio_effect_means_no_class_difference() -> None:
    cfg = {**TINY, "n_subjects": 4, "samples_per_class": 4, "seed": 11, "physio_effect": 0.0}
    means = _biosignal_table(cfg).groupby("pain").mean()
    assert abs(means.gsr[1.0] - means.gsr[0.0]) < 0.5
    assert abs(means.hr[1.0] - means.hr[0.0]) < 5.0


def test_face_cue_is_weak(tiny: Path) -> None:
    table = pd.read_csv(tiny / "samples.csv", sep="\t")
    late = {}
    for row in table.itertuples():
        path = tiny / "video" / row.subject_name / f"{row.sample_name}.mp4"
        late[(row.subject_name, row.class_name)] = _frames(path)[50].astype(float)
    subjects = table.subject_name.unique()
    within = [np.abs(late[(s, "PA4")] - late[(s, "BL1")]).mean() for s in subjects]
    across = [
        np.abs(late[(a, "BL1")] - late[(b, "BL1")]).mean()
        for i, a in enumerate(subjects)
        for b in subjects[i + 1 :]
    ]
    assert max(within) < 0.5 * min(across)


def test_pain_face_stays_inside_the_face() -> None:
    face = demo.face_patch(0, 96)
    moved = demo.pain_face(face, 1.0)
    diff = np.abs(moved - face)
    rows, cols = diff.mean(axis=1), diff.mean(axis=0)
    # nothing above the brows, below the mouth or at the face's sides
    assert rows[: int(0.12 * 96)].max() < 0.5 and rows[int(0.88 * 96) :].max() < 0.5
    assert cols[: int(0.08 * 96)].max() < 1.5 and cols[int(0.92 * 96) :].max() < 1.5
    # the upper face (brows, eyes) changes most, the lower face (folds, lip) less
    assert diff[:48].mean() > diff[48:].mean() > 1.0
    assert diff.max() < 160.0
    assert np.array_equal(demo.pain_face(face, 0.0), face)
    weaker = np.abs(demo.pain_face(face, 0.5) - face).mean()
    assert 0.2 * diff.mean() < weaker < diff.mean()


def test_expression_face_parts_move_their_own_half() -> None:
    face = demo.face_patch(0, 96)
    upper = np.abs(demo.expression_face(face, 1.0, 0.0) - face)
    lower = np.abs(demo.expression_face(face, 0.0, 1.0) - face)
    assert upper[:48].mean() > 4 * upper[48:].mean()  # brows / eyes
    assert lower[48:].mean() > 4 * lower[:48].mean()  # upper lip / folds
    assert np.array_equal(demo.expression_face(face, 0.0, -1.0), face)


def test_affwild2_face_cue_follows_the_label_in_pulses() -> None:
    from pipeline_steps import demo_affwild2 as aw

    fps, n = 25.0, 250
    cfg = {"face_effect": 1.0}
    levels = np.linspace(-1.0, 1.0, 5)
    cues = [
        aw.face_cue(np.full(n, v, np.float32), fps, cfg, np.random.default_rng(0)) for v in levels
    ]
    means = [c.mean() for c in cues]
    assert means[0] == 0.0 and all(b > a for a, b in zip(means, means[1:], strict=False))
    top = cues[-1]  # label +1: pulses between HELD and 1 times the gain, about 1 per second
    assert top.min() == pytest.approx(aw.HELD * top.max(), rel=0.05)
    peaks = ((top[1:-1] > top[:-2]) & (top[1:-1] >= top[2:])).sum()
    assert aw.PULSE_HZ[0] * n / fps - 1 <= peaks <= aw.PULSE_HZ[1] * n / fps + 1
    silent = aw.face_cue(levels, fps, {"face_effect": 0.0}, np.random.default_rng(0))
    assert not silent.any()


def _cue_table(cfg: dict) -> pd.DataFrame:
    rows = []
    for sample in demo.plan_samples(demo.make_subjects(cfg), cfg):
        rng = demo._rng(cfg["seed"], 3, sample.sample_id)
        rows.append({"pain": sample.pain, "cue": demo.cue_strength(sample, cfg, rng)})
    return pd.DataFrame(rows)


def test_face_cue_is_label_driven_but_imperfect() -> None:
    """Even a perfect reader of the grimace stays well below the physiology's accuracy."""
    cfg = {**TINY, "n_subjects": 20, "samples_per_class": 20, "seed": 11}
    table = _cue_table(cfg)
    grimace = table.cue > 0.4
    pain = table.pain == 1
    assert 0.7 < grimace[pain].mean() < 0.9  # some pain samples keep a neutral face
    assert 0.03 < grimace[~pain].mean() < 0.2  # some baseline samples grimace
    face_acc = _threshold_accuracy(table.cue, table.pain)
    assert 0.7 < face_acc < 0.88
    physio = _biosignal_table({**cfg, "n_subjects": 4, "samples_per_class": 10})
    assert _threshold_accuracy(physio.gsr, physio.pain) > face_acc
    assert (_cue_table({**cfg, "face_effect": 0.0}).cue == 0.0).all()


def test_face_is_detectable(tiny: Path) -> None:
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = total = 0
    for video in sorted((tiny / "video").rglob("*.mp4")):
        for frame in _frames(video)[::20]:
            total += 1
            grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            boxes = cascade.detectMultiScale(grey, 1.1, 4, minSize=(40, 40))
            centred = [(x, y, w, h) for x, y, w, h in boxes if abs(x + w / 2 - 64) < 20 and w >= 50]
            found += bool(centred)
    assert found >= 0.8 * total


def test_skip_when_up_to_date(tiny: Path, capsys: pytest.CaptureFixture) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}
    demo.generate_biovid_demo(tiny, dict(TINY))
    assert "up to date" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before


def test_regenerates_on_other_settings(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    small = {**TINY, "n_subjects": 2, "samples_per_class": 1, "duration_s": 0.5}
    demo.generate_biovid_demo(root, small)
    first = _digests(root)
    demo.generate_biovid_demo(root, {**small, "seed": 5})
    assert _digests(root) != first
    assert not list(tmp_path.glob(".demo.tmp-*"))


def test_refuses_folder_without_marker(tmp_path: Path) -> None:
    root = tmp_path / "real"
    root.mkdir()
    (root / "samples.csv").write_text("precious\n")
    with pytest.raises(demo.DemoDataError, match="without a demo marker"):
        demo.generate_biovid_demo(root, dict(TINY))
    assert [p.name for p in root.iterdir()] == ["samples.csv"]
    assert (root / "samples.csv").read_text() == "precious\n"


def _params_file(tmp_path: Path, layout: str, root: Path) -> Path:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["datasets"]["biovid"].update(layout=layout, root=str(root))
    params["make_demo_data"] = {**TINY, "n_subjects": 2, "samples_per_class": 1, "duration_s": 0.5}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    load_params(path)  # the file is valid
    return path


def test_cli_writes_dataset_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data" / "biovid_demo"
    params = _params_file(tmp_path, "biovid", root)
    assert demo.main(["--params", str(params), "--dataset", "biovid"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (root / "samples.csv").is_file() and (root / demo.MARKER).is_file()


def test_cli_refuses_a_layout_without_generator(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "affwild2"
    monkeypatch.delitem(demo.GENERATORS, "affwild2")
    with pytest.raises(demo.DemoDataError, match="no demo generator"):
        demo.main(
            ["--params", str(_params_file(tmp_path, "affwild2", root)), "--dataset", "biovid"]
        )
    assert not root.exists()


def test_every_schema_layout_has_a_generator() -> None:
    from pipeline_steps.config import load_schema

    layouts = load_schema()["properties"]["datasets"]["additionalProperties"]["properties"]
    assert set(layouts["layout"]["enum"]) == set(demo.GENERATORS)
