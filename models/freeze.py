"""Freezing of trained networks (teachers, backbones) and a check that they stay frozen."""

from __future__ import annotations

from torch import nn

_FROZEN_ATTR = "_mtpkdot_frozen"


class _EvalOnlyTrain:
    """Replacement ``train()`` of a frozen module: always eval, whatever ``mode`` says.

    A plain object (not a bound method) so frozen modules still deep-copy and pickle.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        for sub in self.module.modules():
            sub.training = False
        return self.module


def freeze(module: nn.Module) -> nn.Module:
    """eval() + requires_grad_(False); a later ``train()`` (e.g. of a parent) keeps it in eval."""
    module.eval()
    module.requires_grad_(False)
    module.train = _EvalOnlyTrain(module)
    setattr(module, _FROZEN_ATTR, True)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """Undo ``freeze``: trainable again, ``train()`` restored, left in train mode."""
    if getattr(module, _FROZEN_ATTR, False):
        del module.train
        delattr(module, _FROZEN_ATTR)
    module.requires_grad_(True)
    return module.train()


def assert_frozen(module: nn.Module, name: str | None = None) -> None:
    """Raise AssertionError if any parameter requires grad or any submodule is training."""
    label = name or type(module).__name__
    grads = [n for n, p in module.named_parameters() if p.requires_grad]
    training = [n or "<root>" for n, m in module.named_modules() if m.training]
    if grads or training:
        raise AssertionError(
            f"{label} is not frozen: parameters requiring grad {grads[:5]}"
            f"{' ...' if len(grads) > 5 else ''}, submodules in train mode {training[:5]}"
            f"{' ...' if len(training) > 5 else ''}"
        )
