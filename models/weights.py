"""Local pretrained weights: read a state-dict file, fit it to a module, load it strictly.

Nothing is downloaded: a weights file is a ``torch.save``-d ``state_dict()`` on local disk
(or a dict holding one under ``"state_dict"``), e.g. saved from torchvision's
``r3d_18(weights="KINETICS400_V1")`` or ``resnet18(weights="IMAGENET1K_V1")``.

Input-channel rule (:func:`adapt_stem_weight`): when the file's stem convolution reads
``k`` channels (3 = RGB) and the module reads ``c != k``:

- ``c == 1``: the pretrained filters are summed over their ``k`` channels, so a grey image
  gives the response the RGB filters give to the same image repeated in each colour;
- otherwise: the ``k`` channels are repeated cyclically up to ``c`` and scaled by ``k / c``,
  so an input with the same value in every channel gives the pretrained response (e.g.
  ``video_input: frames+delta``, 6 channels: filters of frames and of deltas start as the
  RGB filters halved).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from models.backbones import STEM_WEIGHT

_SHOWN = 8  # keys listed per kind of mismatch in an error


def adapt_stem_weight(weight: Tensor, in_channels: int) -> Tensor:
    """A conv weight (out, k, ...) made to read ``in_channels`` channels (rule: module doc)."""
    have = weight.shape[1]
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if in_channels == have:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = math.ceil(in_channels / have)
    tiled = weight.repeat(1, reps, *(1,) * (weight.ndim - 2))[:, :in_channels]
    return tiled * (have / in_channels)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (provenance of the weights a run used)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a local weights file; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a readable torch weights file ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    odd = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if odd:
        raise ValueError(f"{path}: state dict entries that are not tensors: {odd[:_SHOWN]}")
    return state


def _listed(keys: list[str]) -> str:
    more = f" ... (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{len(keys)} {keys[:_SHOWN]}{more}"


def check_state_dict(module: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """Raise ValueError listing missing, unexpected and wrongly shaped keys, naming ``source``."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]  # in the module's order
    unexpected = [k for k in state if k not in expected]  # in the file's order
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    kinds = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
    found = [f"{kind} {_listed(keys)}" for kind, keys in kinds.items() if keys]
    if found:
        raise ValueError(
            f"weights in {source} do not match {type(module).__name__}: " + "; ".join(found)
        )


def load_strict(module: nn.Module, state: dict[str, Tensor], source: str | Path) -> nn.Module:
    """``check_state_dict`` then ``load_state_dict(strict=True)``."""
    check_state_dict(module, state, source)
    module.load_state_dict(state, strict=True)
    return module


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> nn.Module:
    """Load a torchvision-format file into a :mod:`models.backbones` backbone.

    The stem weight is adapted to the backbone's input channels (module doc); a backbone
    built without ``fc`` (``num_classes=None``) ignores the file's ``fc.weight``/``fc.bias``
    (the pretrained classifier is replaced by the teacher's own head). Every other key must
    match by name and shape.
    """
    state = dict(read_state_dict(path))
    stem = STEM_WEIGHT.get(getattr(backbone, "name", ""))
    target = backbone.state_dict()
    if stem in state and stem in target:
        want, have = target[stem].shape, state[stem].shape
        if have[0] == want[0] and have[2:] == want[2:] and have[1] != want[1]:
            state[stem] = adapt_stem_weight(state[stem], want[1])
    if getattr(backbone, "num_classes", 0) is None:
        state = {k: v for k, v in state.items() if k not in ("fc.weight", "fc.bias")}
    return load_strict(backbone, state, path)
