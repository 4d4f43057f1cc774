"""The published FFHQ-Aging face-parsing model and a safe loader for its checkpoint.

DeepLabV3 on ResNet-101 with GroupNorm and weight standardisation (DESIGN.md, "Segmentation").

Every convolution but the classifier standardises its weight per output channel on each
forward pass, as published; :func:`fold_weight_standardization` does it once instead, which
gives the same outputs with less work per batch.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the usual name)
from torch import nn

from ffhq_aging_assets.lib.masks import NUM_CLASSES


class CheckpointError(ValueError):
    """A file is not a usable DeepLab checkpoint; the message says what is wrong."""


class WSConv2d(nn.Conv2d):
    """A convolution that standardises its weight (per output channel) before use."""

    def standardized_weight(self) -> torch.Tensor:
        """The weight minus its mean over (in, kh, kw), divided by its std (unbiased) + 1e-5."""
        w = self.weight
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        std = w.reshape(w.shape[0], -1).std(dim=1).reshape(-1, 1, 1, 1) + 1e-5
        return w / std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve with the standardised weight."""
        return F.conv2d(
            x,
            self.standardized_weight(),
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-5)


class Bottleneck(nn.Module):
    """ResNet bottleneck (expansion 4) with standardised convolutions and GroupNorm."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = WSConv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(planes)
        self.conv2 = WSConv2d(
            planes, planes, 3, stride=stride, dilation=dilation, padding=dilation, bias=False
        )
        self.bn2 = _norm(planes)
        self.conv3 = WSConv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Three convolutions plus the shortcut."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3, image pooling; then classifier."""

    def __init__(self, channels: int = 2048, depth: int = 256, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.aspp1 = WSConv2d(channels, depth, 1, bias=False)
        self.aspp2 = WSConv2d(channels, depth, 3, dilation=6, padding=6, bias=False)
        self.aspp3 = WSConv2d(channels, depth, 3, dilation=12, padding=12, bias=False)
        self.aspp4 = WSConv2d(channels, depth, 3, dilation=18, padding=18, bias=False)
        self.aspp5 = WSConv2d(channels, depth, 1, bias=False)
        self.aspp1_bn = _norm(depth)
        self.aspp2_bn = _norm(depth)
        self.aspp3_bn = _norm(depth)
        self.aspp4_bn = _norm(depth)
        self.aspp5_bn = _norm(depth)
        self.conv2 = WSConv2d(depth * 5, depth, 1, bias=False)
        self.bn2 = _norm(depth)
        self.conv3 = nn.Conv2d(depth, num_classes, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Five branches, concatenated, projected, classified."""
        branches = [
            self.relu(bn(conv(x)))
            for conv, bn in (
                (self.aspp1, self.aspp1_bn),
                (self.aspp2, self.aspp2_bn),
                (self.aspp3, self.aspp3_bn),
                (self.aspp4, self.aspp4_bn),
            )
        ]
        pooled = self.relu(self.aspp5_bn(self.aspp5(F.adaptive_avg_pool2d(x, 1))))
        branches.append(
            F.interpolate(pooled, size=x.shape[2:], mode="bilinear", align_corners=True)
        )
        out = self.relu(self.bn2(self.conv2(torch.cat(branches, dim=1))))
        return self.conv3(out)


class DeepLabV3(nn.Module):
    """ResNet-101 backbone (output stride 16) and ASPP head: (N, 3, H, W) -> (N, 19, H, W)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = WSConv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(64, 3)
        self.layer2 = self._stage(128, 4, stride=2)
        self.layer3 = self._stage(256, 23, stride=2)
        self.layer4 = self._stage(512, 3, dilation=2)
        self.aspp = ASPP(2048, 256, num_classes)

    def _stage(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or dilation != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(
                WSConv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                _norm(planes * 4),
            )
        # The first block of a dilated stage runs at half its dilation, as published.
        layers = [Bottleneck(self.inplanes, planes, stride, max(1, dilation // 2), downsample)]
        self.inplanes = planes * 4
        layers += [Bottleneck(self.inplanes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the input's size."""
        size = x.shape[2:]
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.aspp(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def build_deeplab(num_classes: int = NUM_CLASSES) -> DeepLabV3:
    """The published architecture with freshly initialised weights."""
    return DeepLabV3(num_classes)


@torch.no_grad()
def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Replace every standardising convolution by a plain one holding the standardised weight.

    Same outputs (up to float rounding), without re-standardising ~100 weights per forward.
    The folded model's state dict no longer equals the checkpoint's, so fold after loading.
    """
    for name, child in list(model.named_children()):
        if isinstance(child, WSConv2d):
            # torch types these attributes tuple[int, ...]; they are the 2-tuples given.
            plain = nn.Conv2d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,  # type: ignore[arg-type]
                stride=child.stride,  # type: ignore[arg-type]
                padding=child.padding,  # type: ignore[arg-type]
                dilation=child.dilation,  # type: ignore[arg-type]
                groups=child.groups,
                bias=child.bias is not None,
            ).to(device=child.weight.device, dtype=child.weight.dtype)
            plain.weight.copy_(child.standardized_weight())
            if child.bias is not None and plain.bias is not None:
                plain.bias.copy_(child.bias)
            setattr(model, name, plain)
        else:
            fold_weight_standardization(child)
    return model


def checkpoint_state_dict(raw: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights in a published-format checkpoint: ``{"state_dict": {"module.x": ...}}``.

    Keys lose their ``module.`` prefix and those containing ``tracked`` are dropped.

    Raises:
        CheckpointError: when ``raw`` is not such a checkpoint.
    """
    if isinstance(raw, Mapping) and "state_dict" in raw:
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{source}: no state_dict mapping of parameter names to tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: entry {key!r} is not a named tensor")
        if "tracked" in key:
            continue
        state[key.removeprefix("module.")] = value
    return state


def check_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and mis-shaped keys."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} (expected {expected[k]})"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != expected[k]
    )
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {what} keys: {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the published DeepLab: " + "; ".join(problems)
        )


def load_deeplab(path: str | Path, device: str | torch.device = "cpu") -> DeepLabV3:
    """Load the published checkpoint file safely (``weights_only=True``) into the architecture.

    Returns the model in eval mode on ``device``, not folded.

    Raises:
        CheckpointError: not a checkpoint, or missing, unexpected or mis-shaped keys.
    """
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        zipfile.BadZipFile,
        ValueError,
        AttributeError,
        TypeError,
    ):
        # torch's own text is of no use here and may advise weights_only=False, which would
        # run whatever code a wrong file carries.
        raise CheckpointError(
            f"{path}: not a loadable torch checkpoint; it is truncated, or not the published file"
        ) from None
    state = checkpoint_state_dict(raw, str(path))
    model = build_deeplab()
    check_state_dict(model, state, str(path))
    model.load_state_dict(state)
    return model.eval().to(device)
