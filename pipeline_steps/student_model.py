"""The deployable visual student: face frames -> frozen video encoder -> student -> prediction."""

from __future__ import annotations

import torch
from torch import nn

from models.encoders import video_input
from models.freeze import freeze
from models.student import Student
from pipeline_steps.fold_data import VIDEO
from pipeline_steps.layout import Layout
from pipeline_steps.train_modality_teacher import teacher_from_checkpoint
from pipeline_steps.trainer import load_checkpoint


class VisualStudent(nn.Module):
    """Needs only face crops (B, T, H, W, 3) uint8; each sample is predicted independently."""

    def __init__(
        self, video_teacher: nn.Module, student: Student, video_mode: str = "frames"
    ) -> None:
        super().__init__()
        self.video_teacher = video_teacher
        self.student = student
        self.video_mode = video_mode

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, features = self.video_teacher(video_input(frames, self.video_mode))
        return self.student(features)


def load_visual_student(layout: Layout, fold: int, method: str) -> VisualStudent:
    """Rebuild the frozen student of ``method`` on ``fold`` from its checkpoints."""
    t = load_checkpoint(layout.teacher(fold, VIDEO))
    teacher = teacher_from_checkpoint(t)
    s = load_checkpoint(layout.student(fold, method))
    student = Student(s["in_dim"], s["hidden"], s["embed_dim"], s["n_outputs"])
    student.load_state_dict(s["state_dict"])
    return freeze(VisualStudent(teacher, student, t.get("video_input") or "frames"))
