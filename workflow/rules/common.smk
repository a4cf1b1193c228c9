# Shared helpers: validated config, paths (pipeline_steps.layout), input functions.
import functools
from argparse import Namespace
from pathlib import Path

import yaml

from pipeline_steps.config import (
    demo_settings,
    shared_run_params,
    student_seeds,
    validate_params,
)
from pipeline_steps.dataset_inputs import snakemake_inputs
from pipeline_steps.job_matrix import folds
from pipeline_steps.layout import Layout

config.update(
    validate_params(config, source="Snakemake config (params.yaml + --config)")
)

PHYSIO = ("eda", "ecg", "emg")
ENV = "../../environment.yml"
L = Layout(config["run"]["results_dir"], "{dataset}")
N_SHARDS = config["crop_faces"]["n_shards"]
METHODS = config["train_student"]["methods"]
SEEDS = student_seeds(config)
# `run` as the training rules' params, without run.seeds: a new student seed adds jobs and
# reruns none (the teachers are trained once per fold with run.seed).
RUN = shared_run_params(config)


def effective_params_file() -> str:
    """The validated config (params.yaml plus any --config) as the file every step reads.

    Its path is fixed (Snakemake locks the working directory, so one invocation writes it at a
    time): a name that changed with every parameter would make Snakemake's params trigger rerun
    all jobs on any change. The other ``params`` entries of each step are its own sections (as
    in dvc.yaml), so a changed student parameter reruns only the student and what follows.
    """
    text = yaml.safe_dump(dict(config), sort_keys=True)
    path = Path(".snakemake/mtpkdot/params.yaml")
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


PARAMS_FILE = effective_params_file()


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    fold=r"\d+",
    seed=r"\d+",
    shard=r"\d+",
    modality="|".join(("video", "audio") + PHYSIO),
    physio="|".join(PHYSIO),
    method="|".join(("visual_only", "pkd", "pkdot", "mtpkdot")),


@functools.cache
def get_folds(dataset: str) -> list[int]:
    """The dataset's folds: n_folds, or one per subject with index_dataset.loso."""
    return folds(config, dataset)


def dataset_cfg(wildcards):
    return config["datasets"][wildcards.dataset]


def get_dataset_source(wildcards):
    """Demo datasets come from make_demo_data; a user's dataset is read from the inputs its
    layout declares (pipeline_steps/dataset_inputs.py: folders and the files in them, so a
    changed, added or removed file re-triggers indexing)."""
    ds = dataset_cfg(wildcards)
    if ds["demo"]:
        return str(L.demo_manifest).format(dataset=wildcards.dataset)
    return snakemake_inputs(ds)


def get_modality_features(wildcards):
    """The feature shards a modality teacher reads."""
    if wildcards.modality == "video":
        return [
            str(L.video_shard(i)).format(dataset=wildcards.dataset)
            for i in range(N_SHARDS)
        ]
    return str(L.physio_shard(wildcards.modality)).format(dataset=wildcards.dataset)


def get_pretrained_weights(wildcards):
    """The local weights file of a modality's encoder (train_modality_teacher.pretrained), if any:
    a missing file stops the DAG before training, a changed one reruns the teacher."""
    path = config["train_modality_teacher"]["pretrained"].get(wildcards.modality)
    return [path] if path else []


def get_fold_embeddings(wildcards):
    """Frozen embeddings of every modality of the dataset for one fold."""
    return [
        str(L.embeddings("{fold}", m)).format(
            dataset=wildcards.dataset, fold=wildcards.fold
        )
        for m in dataset_cfg(wildcards)["modalities"]
    ]


def get_cross_fit_features(wildcards):
    """Every modality's feature shards when align_teacher_pool cross-fits (it retrains every
    teacher of the fold), else none."""
    if not config["align_teacher_pool"]["cross_fit"]:
        return []
    paths = []
    for m in dataset_cfg(wildcards)["modalities"]:
        found = get_modality_features(Namespace(dataset=wildcards.dataset, modality=m))
        paths += found if isinstance(found, list) else [found]
    return paths


def get_student_video_inputs(wildcards):
    """finetune: the video shards and the video teacher (the encoder's start); frozen: the
    video teacher's cached embeddings."""
    if config["train_student"]["student"] == "frozen":
        return str(L.embeddings("{fold}", "video")).format(**wildcards)
    return [
        str(L.teacher("{fold}", "video")).format(**wildcards),
        *get_modality_features(Namespace(dataset=wildcards.dataset, modality="video")),
    ]


def get_student_teacher_inputs(wildcards):
    """visual_only needs no teacher; the other methods read the pool cache."""
    if wildcards.method == "visual_only":
        return []
    return str(L.pool_outputs("{fold}")).format(
        dataset=wildcards.dataset, fold=wildcards.fold
    )


def get_fold_evaluations(wildcards):
    """Every student's evaluation and predictions (the paired units): fold x method x seed."""
    return expand(
        [
            str(L.evaluation("{fold}", "{method}", "{seed}")),
            str(L.predictions("{fold}", "{method}", "{seed}")),
        ],
        dataset=wildcards.dataset,
        fold=get_folds(wildcards.dataset),
        method=METHODS,
        seed=SEEDS,
    )


def get_teacher_evaluations(wildcards):
    return expand(
        str(L.teacher_evaluation("{fold}")),
        dataset=wildcards.dataset,
        fold=get_folds(wildcards.dataset),
    )


def get_report_figure_inputs(wildcards):
    """Fold 0's figure sources: student similarity snapshots (first seed), pool embeddings."""
    paths = [L.student_similarity(0, m, SEEDS[0]) for m in METHODS]
    paths.append(L.pool_embeddings(0))
    return [str(p).format(dataset=wildcards.dataset) for p in paths]


def get_final_outputs(wildcards):
    reports = [
        str(p).format(dataset=d)
        for d in config["run"]["datasets"]
        for p in (L.report_csv, L.report_md, L.root / "report.html")
    ]
    teachers = [
        str(L.teacher_evaluation(k)).format(dataset=d)
        for d in config["run"]["datasets"]
        for k in get_folds(d)
    ]
    return reports + teachers


# One MLflow parent run per dataset and Snakemake run: opened before the jobs fan out (not by
# --touch, which runs nothing), ended FINISHED or FAILED when the run ends.
onstart:
    if not workflow.touch:
        for d in config["run"]["datasets"]:
            shell(
                f"python -m pipeline_steps.open_run --params {PARAMS_FILE} --dataset {d}"
            )


def close_runs(status):
    for d in config["run"]["datasets"]:
        shell(
            f"python -m pipeline_steps.close_run --params {PARAMS_FILE} --dataset {d}"
            f" --status {status} || true"
        )


onsuccess:
    close_runs("FINISHED")


onerror:
    close_runs("FAILED")
