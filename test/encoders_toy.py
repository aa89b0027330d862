"""A toy learnt encoder, written the way a user adds one: a plugin in one module.

Registered by the tests that use it (:func:`registered_toy`), never by the product. The network
is a 5x5 stride-4 convolution, ReLU, global mean pooling, a linear layer and L2 normalisation:
``(B, 3, H, W)`` uint8 -> ``(B, 32)`` unit-norm float32. Its plain state_dict (keys
``conv.*``, ``fc.*``) is its "official" checkpoint layout ``toy``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders import register_encoder, unregister_encoder
from vpr_seq_ros.encoders.base import EncoderPlugin, ExportModel, FrameEncoder, Support
from vpr_seq_ros.errors import ModelError

NAME = 'toy-cnn'
DIM = 32
LAYOUT = 'toy'


class ToyNet(nn.Module):
    """``(B, 3, H, W)`` uint8 RGB -> ``(B, 32)`` unit norm; owns its ``x / 255``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 64, 5, stride=4)
        self.fc = nn.Linear(64, DIM)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0
        x = F.relu(self.conv(x - 0.5)).mean(dim=(2, 3))
        return F.normalize(self.fc(x), dim=1)


class ToyEncoder(FrameEncoder):
    """The toy network on torch (fp32 or bf16 autocast on the CPU)."""

    name = NAME

    def __init__(self, net: ToyNet, cfg: EncoderConfig, sha256: str | None,
                 precision: str) -> None:
        self.net = net.eval()
        self.cfg = cfg
        self.sha256 = sha256
        self.precision = precision

    @property
    def dim(self) -> int:
        return DIM

    def settings(self) -> dict[str, Any]:
        return {'name': NAME, 'input_height': self.cfg.input_height,
                'input_width': self.cfg.input_width, 'weights_sha256': self.sha256,
                'random_init': self.sha256 is None, 'untrained_head': False,
                **self.precision_settings()}

    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        if len(inputs) == 0:
            return np.zeros((0, DIM), np.float32)
        x = torch.from_numpy(ToyPlugin().preprocess(inputs, self.cfg.input_height,
                                                    self.cfg.input_width))
        autocast: Any = (torch.autocast('cpu', dtype=torch.bfloat16)
                         if self.precision == 'bf16' else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            return self.net(x).float().numpy()


def load_toy(weights: str | None) -> tuple[ToyNet, str | None, str]:
    """(network, weights sha256, layout) from a checkpoint in any layout the plugin knows."""
    from vpr_seq_ros.models.checkpoints import load_state_dict_strict, read_checkpoint

    net = ToyNet()
    if weights is None:
        return net, None, 'random'
    ckpt = read_checkpoint(weights)
    if ckpt.kind != NAME:
        raise ModelError(f'{weights} holds {ckpt.kind} weights, not {NAME}')
    load_state_dict_strict(net, ckpt.state_dict, str(weights), 'toy')
    return net, ckpt.sha256, ckpt.layout


class ToyPlugin(EncoderPlugin):
    """The toy encoder's plugin: torch (fp32, bf16) or onnx (fp32, int8); exportable."""

    name = NAME
    precisions = ('fp32', 'bf16', 'int8')
    checkpoint_kind = NAME
    checkpoint_layouts = (LAYOUT,)
    exportable = True

    def detect_layout(self, keys: Sequence[str]) -> str | None:
        return LAYOUT if set(keys) == {'conv.weight', 'conv.bias', 'fc.weight',
                                       'fc.bias'} else None

    def build(self, cfg: EncoderConfig, precision: str = 'fp32',
              num_threads: int | None = None) -> FrameEncoder:
        if cfg.runtime == 'onnx':
            return self.build_onnx(cfg, precision, num_threads)
        net, sha256, _ = load_toy(cfg.weights)
        return ToyEncoder(net, cfg, sha256, precision)

    def precision_support(self, cfg: EncoderConfig, caps: Any) -> dict[str, Support]:
        if cfg.runtime == 'onnx':
            return {'bf16': Support(False, False, 'torch only'),
                    'int8': Support(True, True, 'onnxruntime int8')}
        return {'bf16': Support(True, caps.cpu_bf16, 'torch autocast'),
                'int8': Support(False, False, 'onnx only')}

    def export_model(self, cfg: EncoderConfig) -> ExportModel:
        net, sha256, layout = load_toy(cfg.weights)
        return ExportModel(net=net.eval(), dim=DIM, weights_sha256=sha256,
                           weights_layout=layout, random_init=sha256 is None)


@contextlib.contextmanager
def registered_toy() -> Iterator[None]:
    """The toy encoder in the registry for the duration of the block (one registry line)."""
    register_encoder(NAME, ToyPlugin)
    try:
        yield
    finally:
        unregister_encoder(NAME)


def save_toy_weights(path: Path, seed: int) -> Path:
    """A plain state_dict of a seeded toy network (its "official" layout)."""
    torch.save(ToyNet(seed).state_dict(), path)
    return path
