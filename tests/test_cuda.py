"""On a CUDA device: the student's objective under bfloat16 autocast, and seeded training that
gives the same weights twice (cuBLAS workspace and determinism set by seed_everything).
Skipped without CUDA; benchmarks/gpu_check.sh runs them on a GPU machine."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from models.losses import LossInputs, weighted_objective
from models.student import Student
from pipeline_steps.config import REPO_ROOT

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

WEIGHTS = {"task": 0.8, "ot": 0.2, "centroid": 0.2}

# Trains the student a few steps on CUDA from seed 0 and prints a digest of its weights.
TRAIN = r"""
import hashlib
import torch
from models.losses import LossInputs, weighted_objective
from models.student import Student
from pipeline_steps.runtime import seed_everything

seed_everything(0)
dev = torch.device("cuda")
model = Student(32, 64, 32, 2).to(dev)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
g = torch.Generator().manual_seed(1)
x = torch.randn(64, 32, generator=g).to(dev)
y = torch.randint(0, 2, (64,), generator=g).to(dev)
z_t = torch.randn(64, 32, generator=g).to(dev)
for _ in range(10):
    with torch.autocast("cuda", torch.bfloat16):
        pred, z_s = model(x)
        inputs = LossInputs(pred, y, "classification", z_student=z_s, z_teacher=z_t, topk=8)
        loss, _ = weighted_objective({"task": 0.8, "ot": 0.2, "centroid": 0.2}, inputs)
    opt.zero_grad()
    loss.backward()
    opt.step()
state = b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())
print(hashlib.sha256(state).hexdigest())
"""


def test_objective_under_cuda_autocast_is_float32_and_close() -> None:
    g = torch.Generator().manual_seed(0)
    f_v, y = torch.randn(32, 12, generator=g).cuda(), torch.randint(0, 2, (32,), generator=g)
    z_t = torch.randn(32, 12, generator=g).cuda()
    model = Student(12, 16, 12, 2).cuda()
    with torch.autocast("cuda", torch.bfloat16):
        pred, z_s = model(f_v)
        assert z_s.dtype == torch.bfloat16
        inputs = LossInputs(pred, y.cuda(), "classification", z_student=z_s, z_teacher=z_t, topk=6)
        loss, _ = weighted_objective(WEIGHTS, inputs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    ref, _ = weighted_objective(
        WEIGHTS,
        LossInputs(
            pred.float(), y.cuda(), "classification", z_student=z_s.float(), z_teacher=z_t, topk=6
        ),
    )
    assert abs(ref.item() - loss.item()) < 1e-5


def test_seeded_cuda_training_is_repeatable() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("CUBLAS_WORKSPACE_CONFIG", None)
    digests = [
        subprocess.run(
            [sys.executable, "-c", TRAIN], capture_output=True, text=True, env=env, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert digests[0] == digests[1] and len(digests[0]) == 64
