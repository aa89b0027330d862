"""ResNet-18 trunk (no avgpool, no fc) and the ImageNet input normalisation.

Attribute names follow torchvision's ``resnet18`` (``conv1``, ``bn1``, ``layer1`` .. ``layer4``,
blocks with ``conv1/bn1/conv2/bn2`` and ``downsample.0/1``), so a torchvision ImageNet state_dict
loads by key once its ``fc.*`` entries are dropped. Written here because torchvision is not a
dependency.

Shapes: ``(B, 3, H, W)`` normalised float -> ``(B, 512, ceil(H/32), ceil(W/32))``.
"""

from __future__ import annotations

import torch
from torch import nn

# The one place in the package that holds the ImageNet statistics (RGB, inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TRUNK_CHANNELS = 512


class ImageNormalize(nn.Module):
    """uint8 or [0, 1] float RGB -> ImageNet-normalised float, as torchvision's
    ``ToTensor`` + ``Normalize`` (``x / 255``, then ``(x - mean) / std``).

    The statistics are non-persistent buffers: they move with ``.to(device)`` but are not
    state_dict keys, so official checkpoints load unchanged.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN,
                 std: tuple[float, float, float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer('mean', torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise images.

        Args:
            x: ``(B, 3, H, W)`` RGB, uint8 in 0..255 or float in [0, 1].

        Returns:
            ``(B, 3, H, W)`` float (the dtype of the buffers).
        """
        if x.dtype == torch.uint8:
            x = x.to(self.mean.dtype).div(255)
        return (x - self.mean) / self.std


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with a residual connection.

    ``(B, c_in, H, W) -> (B, c_out, H/stride, W/stride)``.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _layer(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out))


class ResNet18Trunk(nn.Module):
    """ResNet-18 cut after ``layer4`` (torchvision names; weights initialised as torchvision
    does: Kaiming-normal convolutions, BatchNorm weight 1 and bias 0).

    ``(B, 3, H, W) -> (B, 512, H/32, W/32)`` (rounded up).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, TRUNK_CHANNELS, 2)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stages(self) -> list[nn.Module]:
        """The eight stages in order: conv1, bn1, relu, maxpool, layer1 .. layer4."""
        return [self.conv1, self.bn1, self.relu, self.maxpool,
                self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages():
            x = stage(x)
        return x
