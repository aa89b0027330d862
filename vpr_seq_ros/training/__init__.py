"""Offline training of SeqMatchNet and JIST on the user's own traverses.

Training sits beside the core and is never imported by it (nor by the node): it needs torch and
reads whole traverses. Everything starts from a manifest (:mod:`.manifest`) that lists the
traverses (image folders, ``.npy`` descriptor files or bags), the frame ranges of the train /
val / test splits and the radii of positives and negatives; a typed configuration
(:mod:`.config`) says how to train. Each trainer is a function ``train_*(cfg) -> Path`` that
returns the selected checkpoint, usable as is by ``vpr-seq build-map`` / ``evaluate`` /
``export-onnx`` and the node:

- :func:`train_seqmatchnet`: a ``seqmatchnet`` transform checkpoint
  (``--transform seqmatchnet --transform-weights best.pt``);
- :func:`train_jist`: a ``jist-r18`` encoder checkpoint (``--encoder jist-r18 --weights
  best.pt``).

Names below are imported on first use (torch loads only then).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    'DataConfig': 'config', 'JistTrainConfig': 'config', 'SeqMatchNetTrainConfig': 'config',
    'ValidationConfig': 'config', 'load_train_config': 'config',
    'train_config_from_dict': 'config',
    'Manifest': 'manifest', 'load_manifest': 'manifest', 'manifest_from_dict': 'manifest',
    'EpochSummary': 'common', 'TrainCallbacks': 'common',
    'train_seqmatchnet': 'seqmatchnet', 'train_jist': 'jist',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    module = importlib.import_module(f'{__name__}.{_EXPORTS[name]}')
    return getattr(module, name)
