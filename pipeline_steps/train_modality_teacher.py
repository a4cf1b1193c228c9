"""Train one modality's teacher (encoder + head) on one fold, then write its frozen
embeddings of every sample of the fold (the input of the fusion teacher and the student)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.encoders import (
    SMALL,
    ModalityTeacher,
    build_encoder,
    load_encoder_weights,
    video_channels,
    video_input,
)
from models.freeze import freeze
from pipeline_steps.fold_data import VIDEO, Normaliser, modality_array, video_shard_paths
from pipeline_steps.stage import (
    StageContext,
    fit_stage,
    fold_parser,
    record_result,
    stage_context,
)
from pipeline_steps.tracking import stage_run
from pipeline_steps.trainer import FitResult, eval_batches, optimiser_step, save_checkpoint

STAGE = "train_modality_teacher"


AUDIO = "audio"


class ModalityInput:
    """Turns stored arrays into encoder inputs: video clips (``video_input`` mode); normalised
    signals (N, C, L); normalised log-mel spectrograms (N, n_mels, frames) as one-channel
    images."""

    def __init__(
        self, modality: str, normaliser: Normaliser | None, video_mode: str = "frames"
    ) -> None:
        self.modality = modality
        self.normaliser = normaliser
        self.video_mode = video_mode

    def __call__(self, array: np.ndarray) -> torch.Tensor:
        if self.modality == VIDEO:
            return video_input(torch.from_numpy(np.ascontiguousarray(array)), self.video_mode)
        x = torch.from_numpy(self.normaliser(array))
        return x[:, None] if self.modality == AUDIO else x


def feature_paths(params: dict, layout, modality: str) -> list:  # noqa: ANN001
    """The feature shard files ``modality`` is read from."""
    if modality == VIDEO:
        return video_shard_paths(params, layout)
    return [layout.physio_shard(modality)]


def architecture(cfg: dict, modality: str) -> dict:
    """What rebuilds ``modality``'s teacher: embed_dim, width, backbone (``backbones``, default
    small) and, for a signal through a standard backbone, the spectrogram settings."""
    backbone = cfg.get("backbones", {}).get(modality) or SMALL
    arch = {"embed_dim": cfg["embed_dim"], "width": cfg["width"], "backbone": backbone}
    if backbone != SMALL and modality not in (VIDEO, AUDIO):
        arch["spectrogram"] = dict(cfg["spectrogram"])
    return arch


def build_teacher(
    modality: str, in_channels: int, cfg: dict, n_outputs: int, video_mode: str = "frames"
) -> ModalityTeacher:
    """Teacher from an :func:`architecture` dict (older checkpoints: no backbone = small)."""
    kind = {VIDEO: "video", AUDIO: "audio"}.get(modality, "signal")
    encoder = build_encoder(
        kind,
        cfg["embed_dim"],
        cfg["width"],
        in_channels,
        backbone=cfg.get("backbone", SMALL),
        spectrogram=cfg.get("spectrogram"),
        video_mode=video_mode,
    )
    return ModalityTeacher(encoder, cfg["embed_dim"], n_outputs)


def teacher_from_checkpoint(ckpt: dict) -> ModalityTeacher:
    """The trained teacher saved by this stage (weights loaded; not frozen)."""
    teacher = build_teacher(
        ckpt["modality"],
        ckpt["in_channels"],
        ckpt,
        ckpt["n_outputs"],
        ckpt.get("video_input") or "frames",
    )
    teacher.load_state_dict(ckpt["state_dict"])
    return teacher


def load_teacher_weights(teacher: ModalityTeacher, cfg: dict, modality: str) -> dict | None:
    """Local pretrained encoder weights from ``pretrained.<modality>``, if set (no download);
    returns their provenance (path, SHA-256) for the checkpoint and the run."""
    path = cfg.get("pretrained", {}).get(modality)
    if not path:
        return None
    try:
        sha = load_encoder_weights(teacher.encoder, path)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"{STAGE}.pretrained.{modality}: {err}") from err
    return {"path": str(path), "sha256": sha}


@torch.no_grad()
def predict(model, to_input, array: np.ndarray, batch_size: int, device) -> tuple:
    """(predictions, embeddings) for every row of ``array``, in order, in eval mode."""
    model.eval()
    preds, embs = [], []
    for sl in eval_batches(len(array), batch_size):
        pred, emb = model(to_input(array[sl]).to(device))
        preds.append(pred.cpu())
        embs.append(emb.cpu())
    return torch.cat(preds), torch.cat(embs)


@dataclass
class FittedTeacher:
    """A trained modality teacher with what turns stored arrays into its inputs."""

    model: ModalityTeacher
    to_input: ModalityInput
    in_channels: int
    normaliser: Normaliser | None
    result: FitResult
    arch: dict
    pretrained: dict | None

    def embed(self, params: dict, layout, modality: str, ids: list[str], batch_size: int):  # noqa: ANN001, ANN201
        """(N, D) embeddings of ``ids`` on CPU, in order."""
        array = modality_array(params, layout, modality, ids)
        return predict(self.model.cpu(), self.to_input, array, batch_size, "cpu")[1]


def fit_modality_teacher(
    ctx: StageContext,
    modality: str,
    train_ids: list[str],
    val_ids: list[str],
    run=None,  # noqa: ANN001
    name: str | None = None,
    stage: str = STAGE,
) -> FittedTeacher:
    """Train ``modality``'s teacher on ``train_ids``, selecting on ``val_ids`` (params
    ``train_modality_teacher``); ``name``/``stage`` key its resume state."""
    cfg = ctx.params[STAGE]
    x_train = modality_array(ctx.params, ctx.layout, modality, train_ids)
    x_val = modality_array(ctx.params, ctx.layout, modality, val_ids)
    task = ctx.task
    y_train, y_val = task.targets(ctx.index, train_ids), task.targets(ctx.index, val_ids)
    normaliser = None if modality == VIDEO else Normaliser.fit(x_train)
    video_mode = ctx.ds["video_input"]
    to_input = ModalityInput(modality, normaliser, video_mode)
    in_channels = {VIDEO: video_channels(video_mode), AUDIO: 1}.get(modality, x_train.shape[1])
    arch = architecture(cfg, modality)
    model = build_teacher(modality, in_channels, arch, ctx.n_outputs, video_mode)
    pretrained = load_teacher_weights(model, cfg, modality)
    model = model.to(ctx.device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    def train_step(idx: torch.Tensor) -> dict[str, float]:
        pred, _ = model(to_input(x_train[idx.numpy()]).to(ctx.device))
        loss = task.loss(pred, y_train[idx].to(ctx.device))
        return {"loss": optimiser_step(optim, loss)}

    def validate() -> dict[str, float]:
        pred, _ = predict(model, to_input, x_val, cfg["batch_size"], ctx.device)
        return task.validation_row(pred, y_val)

    result = fit_stage(
        ctx,
        cfg,
        model,
        len(train_ids),
        train_step,
        validate,
        run,
        stage=stage,
        name=name or modality,
        optimizer=optim,
        inputs=feature_paths(ctx.params, ctx.layout, modality)
        + ([Path(pretrained["path"])] if pretrained else []),
    )
    freeze(model)
    return FittedTeacher(model, to_input, in_channels, normaliser, result, arch, pretrained)


def main(argv: list[str] | None = None) -> None:
    parser = fold_parser(__doc__)
    parser.add_argument("--modality", required=True)
    args = parser.parse_args(argv)
    ctx = stage_context(args, salt=f"{STAGE}-{args.modality}")
    if args.modality not in ctx.modalities:
        raise SystemExit(f"modality {args.modality!r} not in datasets.{ctx.dataset}.modalities")
    cfg = ctx.params[STAGE]
    splits = ctx.splits()
    with stage_run(
        ctx.params, ctx.dataset, ctx.layout, STAGE, modality=args.modality, fold=ctx.fold
    ) as run:
        run.log_params(cfg)
        fitted = fit_modality_teacher(ctx, args.modality, splits.train, splits.val, run)
        result, normaliser = fitted.result, fitted.normaliser
        run.log_params(
            {
                "architecture": fitted.arch,
                "pretrained_sha256": (fitted.pretrained or {}).get("sha256"),
            }
        )
        save_checkpoint(
            ctx.layout.teacher(ctx.fold, args.modality),
            {
                "state_dict": fitted.model.cpu().state_dict(),
                "modality": args.modality,
                "in_channels": fitted.in_channels,
                "video_input": ctx.ds["video_input"] if args.modality == VIDEO else None,
                **fitted.arch,
                "pretrained": fitted.pretrained,
                "n_outputs": ctx.n_outputs,
                "normaliser": normaliser.state() if normaliser else None,
                "best_epoch": result.best_epoch,
            },
        )
        ids = ctx.index["sample_id"].tolist()
        emb = fitted.embed(ctx.params, ctx.layout, args.modality, ids, cfg["batch_size"])
        save_checkpoint(
            ctx.layout.embeddings(ctx.fold, args.modality),
            {
                "sample_ids": ids,
                "embeddings": emb,
                "split": ctx.index[f"split_{ctx.fold}"].tolist(),
            },
        )
        summary = record_result(run, ctx, STAGE, args.modality, result)
    print(f"[{STAGE}] {ctx.dataset} fold {ctx.fold} {args.modality}: {summary}")


if __name__ == "__main__":
    main()
