"""The deployable visual student: face frames -> video encoder -> student head -> prediction.

Two kinds (``train_student.student``): ``finetune`` trains the video encoder together with
the head (its checkpoint holds both); ``frozen`` trains the head on the video teacher's cached
features (its checkpoint holds the head; the encoder is the fold's frozen video teacher's).
Either way the video encoder is rebuilt from the video teacher's checkpoint by
:func:`load_video_teacher`, so whichever backbone built the teacher is the student's too.
"""

from __future__ import annotations

import torch
from torch import nn

from models.encoders import ModalityTeacher, video_input
from models.freeze import freeze
from models.student import Student
from pipeline_steps.fold_data import VIDEO
from pipeline_steps.layout import Layout
from pipeline_steps.train_modality_teacher import teacher_from_checkpoint
from pipeline_steps.trainer import load_checkpoint

STUDENT_KINDS = ("finetune", "frozen")


class VisualStudent(nn.Module):
    """Needs only face crops (B, T, H, W, 3) uint8; each sample is predicted independently.

    forward(frames) -> (pred, z_s): the video encoder's features through the student head."""

    def __init__(self, encoder: nn.Module, student: Student, video_mode: str = "frames") -> None:
        super().__init__()
        self.encoder = encoder
        self.student = student
        self.video_mode = video_mode

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student(self.encoder(video_input(frames, self.video_mode)))


def load_video_teacher(layout: Layout, fold: int) -> tuple[ModalityTeacher, str]:
    """The fold's trained video teacher (encoder + head) and its ``video_input`` mode."""
    t = load_checkpoint(layout.teacher(fold, VIDEO))
    teacher = teacher_from_checkpoint(t)
    return teacher, t.get("video_input") or "frames"


def new_visual_student(layout: Layout, fold: int, hidden: int, n_outputs: int) -> VisualStudent:
    """A student to fine-tune: the fold's video teacher's encoder (weights included) and a new
    head, the same for every method given the same global seed."""
    teacher, mode = load_video_teacher(layout, fold)
    dim = teacher.head.in_features
    return VisualStudent(teacher.encoder, Student(dim, hidden, dim, n_outputs), mode)


def load_visual_student(layout: Layout, fold: int, method: str, seed: int) -> VisualStudent:
    """Rebuild the trained student of ``method`` on ``fold`` with student seed ``seed`` (either
    kind), frozen, in eval."""
    teacher, mode = load_video_teacher(layout, fold)
    s = load_checkpoint(layout.student(fold, method, seed))
    student = Student(s["in_dim"], s["hidden"], s["embed_dim"], s["n_outputs"])
    model = VisualStudent(teacher.encoder, student, mode)
    if s.get("student", "frozen") == "finetune":
        model.load_state_dict(s["state_dict"])
    else:
        student.load_state_dict(s["state_dict"])
    return freeze(model)
