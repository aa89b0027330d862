"""Seeded checkpoints in the official key layouts, and a formula-level JIST reference.

Nothing here uses vpr_seq_ros.models: the key layout is spelled out from the official code's
module tree (see shared research notes, JIST section 1.4), and the reference forward pass is
written with explicit formulas so that it checks the product network independently.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# ImageNet statistics, restated here on purpose: the reference must not share the product's.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-5

# (stage index in model.backbone, in channels, out channels, stride of the first block)
LAYERS = ((4, 64, 64, 1), (5, 64, 128, 2), (6, 128, 256, 2), (7, 256, 512, 2))
BN_FIELDS = ('weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked')


def _bn(gen: torch.Generator, prefix: str, c: int) -> dict[str, torch.Tensor]:
    return {
        f'{prefix}.weight': 0.5 + torch.rand(c, generator=gen),
        f'{prefix}.bias': 0.1 * torch.randn(c, generator=gen),
        f'{prefix}.running_mean': 0.1 * torch.randn(c, generator=gen),
        f'{prefix}.running_var': 0.5 + torch.rand(c, generator=gen),
        f'{prefix}.num_batches_tracked': torch.tensor(1000, dtype=torch.int64),
    }


def _conv(gen: torch.Generator, c_out: int, c_in: int, k: int) -> torch.Tensor:
    return torch.randn(c_out, c_in, k, k, generator=gen) * (2.0 / (c_in * k * k)) ** 0.5


def official_jist_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The 124 entries of ``JIST_r18_512_seqgem.pth``, with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {'model.backbone.0.weight': _conv(gen, 64, 3, 7)}
    sd.update(_bn(gen, 'model.backbone.1', 64))
    for stage, c_in, c_out, stride in LAYERS:
        for block in (0, 1):
            pre = f'model.backbone.{stage}.{block}'
            sd[f'{pre}.conv1.weight'] = _conv(gen, c_out, c_in if block == 0 else c_out, 3)
            sd.update(_bn(gen, f'{pre}.bn1', c_out))
            sd[f'{pre}.conv2.weight'] = _conv(gen, c_out, c_out, 3)
            sd.update(_bn(gen, f'{pre}.bn2', c_out))
            if block == 0 and (stride != 1 or c_in != c_out):
                sd[f'{pre}.downsample.0.weight'] = _conv(gen, c_out, c_in, 1)
                sd.update(_bn(gen, f'{pre}.downsample.1', c_out))
    sd['model.aggregation.1.p'] = torch.tensor([2.5 + torch.rand(1, generator=gen).item()])
    sd['model.aggregation.3.weight'] = torch.randn(512, 512, generator=gen) / 512 ** 0.5
    sd['model.aggregation.3.bias'] = 0.01 * torch.randn(512, generator=gen)
    sd['seq_gem.p'] = torch.tensor([3.7])
    return sd


def cosplace_state_dict(jist_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CosPlace ResNet18_512 layout: JIST keys without ``model.`` and without ``seq_gem.p``."""
    return {k[len('model.'):]: v for k, v in jist_sd.items() if k.startswith('model.')}


def torchvision_state_dict(jist_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision resnet18 layout of the JIST trunk, plus a 1000-class ``fc``."""
    names = {'0': 'conv1', '1': 'bn1', '4': 'layer1', '5': 'layer2', '6': 'layer3',
             '7': 'layer4'}
    out = {}
    for key, value in jist_sd.items():
        if key.startswith('model.backbone.'):
            stage, rest = key[len('model.backbone.'):].split('.', 1)
            out[f'{names[stage]}.{rest}'] = value
    gen = torch.Generator().manual_seed(99)
    out['fc.weight'] = torch.randn(1000, 512, generator=gen)
    out['fc.bias'] = torch.randn(1000, generator=gen)
    return out


def seqmatchnet_checkpoint(dim: int = 64, seed: int = 0,
                           data_parallel: bool = False) -> dict:
    """An official SeqMatchNet training checkpoint (``checkpoint.pth.tar`` layout)."""
    gen = torch.Generator().manual_seed(seed)
    pool = 'pool.module.1' if data_parallel else 'pool.1'
    state_dict = {f'{pool}.conv.weight': torch.randn(dim, dim, 1, generator=gen) / dim ** 0.5,
                  f'{pool}.conv.bias': 0.1 * torch.randn(dim, generator=gen)}
    return {'epoch': 7, 'state_dict': state_dict, 'recalls': {1: 0.5, 5: 0.7},
            'best_score': 0.7, 'parallel': data_parallel}


# ------------------------------------------------------------------- formula-level reference


def _batch_norm(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    shape = (1, -1, 1, 1)
    mean = sd[f'{prefix}.running_mean'].double().view(shape)
    var = sd[f'{prefix}.running_var'].double().view(shape)
    weight = sd[f'{prefix}.weight'].double().view(shape)
    bias = sd[f'{prefix}.bias'].double().view(shape)
    return (x - mean) / torch.sqrt(var + BN_EPS) * weight + bias


def _relu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, torch.zeros_like(x))


def _conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    return F.conv2d(x, weight.double(), stride=stride, padding=weight.shape[-1] // 2)


def _block(x: torch.Tensor, sd: dict[str, torch.Tensor], pre: str, stride: int) -> torch.Tensor:
    out = _relu(_batch_norm(_conv2d(x, sd[f'{pre}.conv1.weight'], stride), sd, f'{pre}.bn1'))
    out = _batch_norm(_conv2d(out, sd[f'{pre}.conv2.weight'], 1), sd, f'{pre}.bn2')
    if f'{pre}.downsample.0.weight' in sd:
        shortcut = _batch_norm(_conv2d(x, sd[f'{pre}.downsample.0.weight'], stride), sd,
                               f'{pre}.downsample.1')
    else:
        shortcut = x
    return _relu(out + shortcut)


def reference_frame_descriptors(sd: dict[str, torch.Tensor], images: np.ndarray) -> np.ndarray:
    """JIST frame descriptors in float64 from explicit formulas.

    Args:
        sd: official JIST state_dict.
        images: ``(B, 3, H, W)`` uint8 RGB, already at the model input size.

    Returns:
        ``(B, 512)`` float64.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).double() / 255.0
    x = (x - torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        STD, dtype=torch.float64).view(1, 3, 1, 1)
    x = _conv2d(x, sd['model.backbone.0.weight'], 2)
    x = _relu(_batch_norm(x, sd, 'model.backbone.1'))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for stage, _, _, stride in LAYERS:
        x = _block(x, sd, f'model.backbone.{stage}.0', stride)
        x = _block(x, sd, f'model.backbone.{stage}.1', 1)
    # channel-wise L2 normalisation of every spatial location
    x = x / torch.sqrt((x * x).sum(dim=1, keepdim=True)).clamp_min(1e-12)
    p = float(sd['model.aggregation.1.p'])
    g = (x.clamp_min(1e-6) ** p).mean(dim=(2, 3)) ** (1.0 / p)  # (B, 512)
    y = g @ sd['model.aggregation.3.weight'].double().T + sd['model.aggregation.3.bias'].double()
    y = y / torch.sqrt((y * y).sum(dim=1, keepdim=True)).clamp_min(1e-12)
    return y.numpy()


def reference_seqgem(frames: np.ndarray, p: float) -> np.ndarray:
    """``(B, L, D) -> (B, D)``: (mean_t max(f, 1e-6)^p)^(1/p) in float64."""
    f = np.maximum(frames.astype(np.float64), 1e-6)
    return np.mean(f ** p, axis=1) ** (1.0 / p)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def seeded_images(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` images ``(height, width, 3)`` uint8: smooth colour patterns plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    images = []
    for _ in range(count):
        freq = rng.uniform(0.02, 0.2, size=(3, 2))
        phase = rng.uniform(0, 2 * np.pi, size=3)
        channels = [127 + 90 * np.sin(freq[c, 0] * xx + freq[c, 1] * yy + phase[c])
                    for c in range(3)]
        img = np.stack(channels, axis=-1) + rng.normal(0, 15, size=(height, width, 3))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return images
