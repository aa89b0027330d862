"""Learnt models (torch): the JIST frame encoder and aggregator, the SeqMatchNet transform, and
their checkpoints (torch is imported on first use of a name below).

Tensor contracts:

- frame encoder :class:`JistNet` ``forward``: ``(B, 3, H, W)`` uint8 RGB (or float in [0, 1])
  -> ``(B, 512)`` unit-norm float;
- aggregator :meth:`JistNet.aggregate`: ``(B, L, 512)`` -> ``(B, 512)`` (SeqGeM, not normalised);
- transform :class:`SeqMatchNetTransform`: ``(B, D_in)`` -> ``(B, D_out)`` unit-norm.

Weights are only ever read from files (:func:`load_jist`, :func:`load_seqmatchnet`); see
``models/README.md`` for where to get them. ONNX export lives in
:mod:`vpr_seq_ros.models.onnx_export` (imported on demand: it needs onnx and onnxruntime).
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use so that torch-free users (the onnx runtime, model cards) never load torch.
_EXPORTS = {
    'CHECKPOINT_FORMAT': 'checkpoints', 'CHECKPOINT_VERSION': 'checkpoints',
    'Checkpoint': 'checkpoints', 'LoadedJist': 'checkpoints', 'load_jist': 'checkpoints',
    'read_checkpoint': 'checkpoints', 'save_checkpoint': 'checkpoints',
    'DESCRIPTOR_DIM': 'jist', 'JistNet': 'jist', 'SeqGeM': 'jist',
    'IMAGENET_MEAN': 'resnet', 'IMAGENET_STD': 'resnet', 'ResNet18Trunk': 'resnet',
    'LoadedTransform': 'seqmatchnet', 'SeqMatchNetTransform': 'seqmatchnet',
    'load_seqmatchnet': 'seqmatchnet',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    module = importlib.import_module(f'{__name__}.{_EXPORTS[name]}')
    return getattr(module, name)
