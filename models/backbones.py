"""Standard ResNet-18 backbones with torchvision's state-dict layout, written in plain torch.

- ``r3d_18``, ``mc3_18``, ``r2plus1d_18``: 18-layer video ResNets (Tran et al., 2018) over
  clips (B, C, T, H, W); torchvision ships Kinetics-400 weights for them.
- ``resnet18``: the 2-D ResNet-18 (He et al., 2016) over images (B, C, H, W); torchvision
  ships ImageNet weights for it.

Parameter and buffer names, shapes and order are torchvision's (``stem``/``conv1``...,
``layer1`` .. ``layer4``, ``fc``; checked against torchvision 0.29.1 by
``tests/fixtures/torchvision_backbone_keys.json``), so a ``state_dict()`` saved from
torchvision loads with ``load_state_dict(strict=True)`` into a backbone built with the same
``num_classes`` (400 for Kinetics, 1000 for ImageNet). ``num_classes=None`` builds no ``fc``;
``features(x)`` is the pooled 512-d embedding that ``fc`` would read.

Normalisation is BatchNorm, as in torchvision: unlike the small encoders of
:mod:`models.encoders`, in training mode a sample's output depends on the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

VIDEO_BACKBONES: tuple[str, ...] = ("r3d_18", "mc3_18", "r2plus1d_18")
IMAGE_BACKBONES: tuple[str, ...] = ("resnet18",)
FEATURE_DIM = 512
# Name of the one weight that reads the input channels (adapted by models.weights).
STEM_WEIGHT = {"r3d_18": "stem.0.weight", "mc3_18": "stem.0.weight"}
STEM_WEIGHT |= {"r2plus1d_18": "stem.0.weight", "resnet18": "conv1.weight"}
_WIDTHS = (64, 128, 256, 512)
_BLOCKS_PER_LAYER = 2

ConvMaker = Callable[[int, int, int, int], nn.Module]


def _full3d(cin: int, cout: int, mid: int, stride: int) -> nn.Module:
    """3x3x3 convolution, stride ``stride`` in time and space (``mid`` unused)."""
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _spatial3d(cin: int, cout: int, mid: int, stride: int) -> nn.Module:
    """1x3x3 convolution, stride ``stride`` in space only (``mid`` unused)."""
    return nn.Conv3d(cin, cout, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)


def _factorised3d(cin: int, cout: int, mid: int, stride: int) -> nn.Module:
    """(2+1)D: 1x3x3 spatial conv to ``mid`` channels, BN, ReLU, 3x1x1 temporal conv."""
    return nn.Sequential(
        nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
    )


def _mid_channels(cin: int, cout: int) -> int:
    """(2+1)D width that keeps the parameter count of a full 3x3x3 conv from cin to cout."""
    return (cin * cout * 27) // (cin * 9 + 3 * cout)


class _VideoBlock(nn.Module):
    """Basic residual block: conv-BN-ReLU, conv-BN, plus a (projected) skip, ReLU."""

    def __init__(self, make: ConvMaker, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = _mid_channels(cin, cout)
        self.conv1 = nn.Sequential(
            make(cin, cout, mid, stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
        )
        self.conv2 = nn.Sequential(make(cout, cout, mid, 1), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            skip = (1, stride, stride) if make is _spatial3d else (stride,) * 3
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=skip, bias=False), nn.BatchNorm3d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + skip)


class _ImageBlock(nn.Module):
    """2-D basic residual block with torchvision's names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(h + skip)


def _init_weights(module: nn.Module) -> None:
    """He init (fan-out) for convolutions, BN at identity, small normal linear weights."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


class _Backbone(nn.Module):
    """Shared tail: four layers of two blocks, global average pool, optional ``fc``."""

    name: str

    def _finish(self, layers: list[nn.Module], pool: nn.Module, num_classes: int | None) -> None:
        for i, layer in enumerate(layers, start=1):
            self.add_module(f"layer{i}", layer)
        self.avgpool = pool
        if num_classes is not None:
            self.fc = nn.Linear(FEATURE_DIM, num_classes)
        self.num_classes = num_classes
        _init_weights(self)

    def stem_forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Pooled embedding (B, 512): the input of ``fc``."""
        h = self.stem_forward(x)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            h = layer(h)
        return self.avgpool(h).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``fc`` logits, or the pooled features when built without ``fc``."""
        feats = self.features(x)
        return feats if self.num_classes is None else self.fc(feats)


_VIDEO_ARCH: dict[str, tuple[ConvMaker, ...]] = {
    "r3d_18": (_full3d,) * 4,
    "mc3_18": (_full3d, _spatial3d, _spatial3d, _spatial3d),
    "r2plus1d_18": (_factorised3d,) * 4,
}


class VideoResNet(_Backbone):
    """18-layer video ResNet ``arch`` (r3d_18, mc3_18, r2plus1d_18): (B, C, T, H, W) clips.

    Downsampling: stem stride 2 in space; layers 2-4 stride 2 in space and (except mc3_18,
    whose layers 2-4 are spatial-only) in time."""

    def __init__(self, arch: str, in_channels: int = 3, num_classes: int | None = 400) -> None:
        super().__init__()
        if arch not in _VIDEO_ARCH:
            raise ValueError(f"unknown video backbone {arch!r}; allowed: {VIDEO_BACKBONES}")
        self.name = arch
        if arch == "r2plus1d_18":
            self.stem = nn.Sequential(
                nn.Conv3d(in_channels, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), bias=False),
                nn.BatchNorm3d(45),
                nn.ReLU(inplace=True),
                nn.Conv3d(45, 64, (3, 1, 1), 1, (1, 0, 0), bias=False),
                nn.BatchNorm3d(64),
                nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv3d(in_channels, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                nn.BatchNorm3d(64),
                nn.ReLU(inplace=True),
            )
        layers, cin = [], 64
        for i, (make, cout) in enumerate(zip(_VIDEO_ARCH[arch], _WIDTHS, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [_VideoBlock(make, cin, cout, stride)]
            blocks += [_VideoBlock(make, cout, cout, 1) for _ in range(_BLOCKS_PER_LAYER - 1)]
            layers.append(nn.Sequential(*blocks))
            cin = cout
        self._finish(layers, nn.AdaptiveAvgPool3d(1), num_classes)

    def stem_forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


class ResNet18(_Backbone):
    """2-D ResNet-18: (B, C, H, W) images; 7x7/2 conv, 3x3/2 max-pool, four layers."""

    def __init__(self, in_channels: int = 3, num_classes: int | None = 1000) -> None:
        super().__init__()
        self.name = "resnet18"
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        layers, cin = [], 64
        for i, cout in enumerate(_WIDTHS):
            stride = 1 if i == 0 else 2
            blocks = [_ImageBlock(cin, cout, stride)]
            blocks += [_ImageBlock(cout, cout, 1) for _ in range(_BLOCKS_PER_LAYER - 1)]
            layers.append(nn.Sequential(*blocks))
            cin = cout
        self._finish(layers, nn.AdaptiveAvgPool2d(1), num_classes)

    def stem_forward(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))


def build_backbone(
    name: str, in_channels: int = 3, num_classes: int | None = None
) -> VideoResNet | ResNet18:
    """A standard backbone by name; ``num_classes=None``: no ``fc``, forward gives features."""
    if name in VIDEO_BACKBONES:
        return VideoResNet(name, in_channels, num_classes)
    if name in IMAGE_BACKBONES:
        return ResNet18(in_channels, num_classes)
    raise ValueError(
        f"unknown backbone {name!r}; allowed: {', '.join(VIDEO_BACKBONES + IMAGE_BACKBONES)}"
    )
