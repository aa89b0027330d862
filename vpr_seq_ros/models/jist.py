"""The JIST network (ResNet-18 / 512 / SeqGeM), with the module names of the official code.

``JistNet.state_dict()`` has exactly the 124 keys of the released ``JIST_r18_512_seqgem.pth``
(``model.backbone.{0,1,4,5,6,7}...``, ``model.aggregation.1.p``,
``model.aggregation.3.{weight,bias}``, ``seq_gem.p``), so that file loads with ``strict=True``.

- ``model`` is CosPlace's ``GeoLocalizationNet``: ``backbone`` = Sequential(conv1, bn1, relu,
  maxpool, layer1..4) of a ResNet-18, ``aggregation`` = Sequential(L2Norm, GeM, Flatten,
  Linear(512, 512), L2Norm).
- ``seq_gem`` is the temporal generalized mean over the L frame descriptors of a sequence, with
  **no** normalisation afterwards (as in the official code).
- ``normalize`` holds the input scaling and ImageNet mean/std as non-persistent buffers, so the
  network takes raw RGB (uint8 0..255, or float in [0, 1]) and an exported graph carries it.

Contracts: frame encoder :meth:`JistNet.forward` ``(B, 3, H, W) -> (B, 512)`` (unit norm);
aggregator :meth:`JistNet.aggregate` ``(B, L, 512) -> (B, 512)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vpr_seq_ros.models.resnet import TRUNK_CHANNELS, ImageNormalize, ResNet18Trunk

DESCRIPTOR_DIM = 512
GEM_EPS = 1e-6


class L2Norm(nn.Module):
    """L2 normalisation along ``dim`` (eps 1e-12, as ``F.normalize``). On a ``(B, C, H, W)`` map
    with ``dim=1`` every spatial location's channel vector gets unit norm."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2.0, dim=self.dim)


class GeM(nn.Module):
    """Spatial generalized mean with a learnt exponent ``p`` (init 3, no constraint).

    ``(B, C, H, W) -> (B, C, 1, 1)``: ``mean_{H,W}(max(x, eps)^p)^(1/p)``.
    """

    def __init__(self, p: float = 3.0, eps: float = GEM_EPS) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1), keepdim=True).pow(1.0 / self.p)


class Flatten(nn.Module):
    """``(B, C, 1, 1) -> (B, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class SeqGeM(nn.Module):
    """Temporal generalized mean of frame descriptors (JIST's SeqGeM).

    ``(B, L, D) -> (B, D)``: for each dimension k,
    ``s_k = (mean_t max(f_tk, eps)^p)^(1/p)`` with a learnt scalar ``p`` (init 3). It is
    invariant to frame order, works for any L, and is **not** normalised afterwards.
    """

    def __init__(self, p: float = 3.0, eps: float = GEM_EPS) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 3:
            raise ValueError(f'SeqGeM takes (B, L, D) descriptors, got {tuple(frames.shape)}')
        return frames.clamp(min=self.eps).pow(self.p).mean(dim=1).pow(1.0 / self.p)


class CosPlaceNet(nn.Module):
    """CosPlace ``GeoLocalizationNet`` for ResNet-18 / 512: normalised image -> unit descriptor.

    ``(B, 3, H, W)`` ImageNet-normalised float -> ``(B, 512)``.
    """

    def __init__(self, trunk: ResNet18Trunk | None = None) -> None:
        super().__init__()
        trunk = trunk if trunk is not None else ResNet18Trunk()
        self.backbone = nn.Sequential(*trunk.stages())
        self.aggregation = nn.Sequential(
            L2Norm(dim=1), GeM(), Flatten(), nn.Linear(TRUNK_CHANNELS, DESCRIPTOR_DIM),
            L2Norm(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregation(self.backbone(x))


class JistNet(nn.Module):
    """JIST: per-frame CosPlace descriptors, aggregated over time by SeqGeM."""

    def __init__(self, trunk: ResNet18Trunk | None = None) -> None:
        super().__init__()
        self.normalize = ImageNormalize()
        self.model = CosPlaceNet(trunk)
        self.seq_gem = SeqGeM()

    @property
    def dim(self) -> int:
        """Descriptor dimension (512)."""
        return DESCRIPTOR_DIM

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Frame descriptors.

        Args:
            images: ``(B, 3, H, W)`` RGB, uint8 0..255 or float in [0, 1] (already resized, see
                :mod:`vpr_seq_ros.preprocess`).

        Returns:
            ``(B, 512)`` float, unit L2 norm per row.
        """
        return self.model(self.normalize(images))

    def aggregate(self, frame_descriptors: torch.Tensor) -> torch.Tensor:
        """Sequence descriptors.

        Args:
            frame_descriptors: ``(B, L, 512)`` descriptors of the L frames of each sequence.

        Returns:
            ``(B, 512)`` SeqGeM descriptors (not normalised).
        """
        return self.seq_gem(frame_descriptors)


def new_jist_net(seed: int | None = None) -> JistNet:
    """A JistNet with initial weights (torchvision-style trunk init, default Linear init,
    p = 3). With ``seed`` the draw is deterministic and the global RNG is left untouched."""
    if seed is None:
        return JistNet()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return JistNet()


def init_head_identity(net: JistNet) -> None:
    """Deterministic untrained head: GeM p = 3, Linear = identity with zero bias, SeqGeM p = 3.

    The frame descriptor is then the L2-normalised spatial GeM of the channel-normalised trunk
    features (a plain GeM descriptor), which is a sensible baseline for an ImageNet trunk.
    """
    with torch.no_grad():
        net.model.aggregation[1].p.fill_(3.0)
        linear = net.model.aggregation[3]
        linear.weight.copy_(torch.eye(DESCRIPTOR_DIM, TRUNK_CHANNELS))
        linear.bias.zero_()
        net.seq_gem.p.fill_(3.0)
