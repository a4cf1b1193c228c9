"""Seeds, determinism and device choice shared by the training steps."""

from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch


def use_deterministic_algorithms(warn_only: bool = True) -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=...)`` without its import cost.

    torch's function does two things: it sets ``torch._inductor.config.deterministic`` and
    calls ``torch._C._set_deterministic_algorithms``. Importing the inductor config pulls in
    torch._dynamo, sympy and torch.distributed (about 0.9 CPU s, 800 modules) although no step
    compiles a model. The same two effects without that import: the C++ switch, and the
    inductor flag through ``TORCHINDUCTOR_DETERMINISTIC=1``, which that config reads when it is
    first imported (or set directly if something imported it already).
    """
    torch._C._set_deterministic_algorithms(True, warn_only=warn_only)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = True
    else:
        os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1"


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch, make CPU kernels deterministic; return a data-order RNG."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    use_deterministic_algorithms(warn_only=True)
    torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def resolve_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; ``cuda`` without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device is 'cuda' but torch sees no CUDA device")
    return torch.device(name)


def bench_devices(name: str) -> list[torch.device]:
    """Devices a benchmark runs on: ``all`` is the CPU plus CUDA when present, else one device."""
    if name == "all":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    return [resolve_device(name)]


def set_threads(n: int | None = None) -> None:
    """Use the threads the scheduler gave this job (Snakemake sets OMP_NUM_THREADS)."""
    n = n or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if n > 0:
        torch.set_num_threads(n)
