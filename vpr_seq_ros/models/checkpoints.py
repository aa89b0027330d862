"""Reading, recognising, strictly loading and writing checkpoints. Nothing is ever downloaded.

Each encoder or transform plugin (:mod:`vpr_seq_ros.encoders.registry`) declares the layouts it
loads (``checkpoint_layouts``, recognised by its ``detect_layout``) and the ``kind`` of this
project's checkpoints that hold its weights (``checkpoint_kind``); this module asks the
registry. Layouts of the registered plugins (a DataParallel ``module.`` segment anywhere in a
key is dropped first):

- ``jist``: the official JIST state_dict (``JIST_r18_512_seqgem.pth``; 124 keys
  ``model.backbone...``, ``model.aggregation...``, ``seq_gem.p``), also inside JIST's training
  dict under ``model_state_dict``.
- ``cosplace``: CosPlace's ``ResNet18_512_cosplace.pth`` (the same keys without ``model.`` and
  without ``seq_gem.p``; SeqGeM p stays 3).
- ``torchvision-resnet18``: a torchvision ImageNet ``resnet18`` state_dict (``conv1``, ``bn1``,
  ``layer1..4``; ``fc.*`` ignored). Only the trunk is learnt: the head is initialised
  deterministically and reported as untrained.
- ``seqmatchnet``: SeqMatchNet's training checkpoint (``ckpt['state_dict']`` with
  ``pool.1.conv.weight`` ``[D_out, D_in, 1]`` and ``pool.1.conv.bias`` ``[D_out]``).
- this project's own checkpoints (:func:`save_checkpoint`)::

      {'format': 'vpr_seq_ros.checkpoint', 'version': 1,
       'kind': 'jist-r18' | 'seqmatchnet' | <checkpoint_kind of any plugin>,
       'state_dict': {...},          # JistNet / SeqMatchNetTransform state_dict
       ...metadata}                  # plain values (str, int, float, bool, None, lists, dicts)

  Their layout is ``vpr_seq_ros/<kind>``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from vpr_seq_ros.encoders.base import file_sha256
from vpr_seq_ros.encoders.jist import LAYOUT_COSPLACE, LAYOUT_JIST
from vpr_seq_ros.encoders.registry import all_plugins
from vpr_seq_ros.errors import ModelError
from vpr_seq_ros.models.jist import JistNet, init_head_identity, new_jist_net
from vpr_seq_ros.models.resnet import ResNet18Trunk

_LOG = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 'vpr_seq_ros.checkpoint'
CHECKPOINT_VERSION = 1

LAYOUT_SEQMATCHNET = 'seqmatchnet'
LAYOUT_RANDOM = 'random'

RANDOM_SEED = 0
_README = 'models/README.md'
_SHOWN_KEYS = 8


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file, read and unwrapped.

    Attributes:
        path: the file.
        sha256: hex SHA-256 of the file.
        layout: one of the layouts in the module docstring.
        kind: what it holds: the ``checkpoint_kind`` of a plugin (``jist-r18``,
            ``seqmatchnet``).
        state_dict: tensors, ``module.`` segments removed.
        meta: metadata of this project's checkpoints (empty for others).
    """

    path: Path
    sha256: str
    layout: str
    kind: str
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return '[' + ','.join(str(int(s)) for s in shape) + ']'


def _some(keys: list[str]) -> str:
    shown = ', '.join(keys[:_SHOWN_KEYS])
    more = len(keys) - _SHOWN_KEYS
    return shown + (f' (and {more} more)' if more > 0 else '')


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop every ``module`` segment that DataParallel inserts (``pool.module.1.x`` ->
    ``pool.1.x``, ``module.model.x`` -> ``model.x``)."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = '.'.join(part for part in str(key).split('.') if part != 'module')
        if new in out:
            raise ModelError(f'state_dict keys collide once "module." is removed: {new}')
        out[new] = value
    return out


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise ModelError(f'weights file {path} does not exist; download the weights (see '
                         f'{_README}) and pass their path')
    if not path.is_file():
        raise ModelError(f'weights path {path} is not a file; pass the checkpoint file itself')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelError(
            f'cannot read {path} as a torch checkpoint ({type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else ""}); it must be a state_dict saved with '
            'torch.save (a pickled whole model is refused: re-save model.state_dict())') from err


def checkpoint_kinds() -> tuple[str, ...]:
    """The checkpoint kinds of the registered plugins (``jist-r18``, ``seqmatchnet``, ...)."""
    return tuple(p.checkpoint_kind for p in all_plugins() if p.checkpoint_kind)


def _unwrap(obj: Any, path: Path) -> tuple[Mapping[str, Any], dict[str, Any], str | None]:
    """(state_dict, meta, kind of a project checkpoint or None)."""
    if not isinstance(obj, Mapping):
        raise ModelError(f'{path} holds a {type(obj).__name__}, not a state_dict; re-save it '
                         'with torch.save(model.state_dict(), path)')
    if 'format' in obj:
        if obj['format'] != CHECKPOINT_FORMAT:
            raise ModelError(f'{path} has unknown format {obj["format"]!r}; expected '
                             f'{CHECKPOINT_FORMAT!r} or a plain state_dict (see {_README})')
        if obj.get('version') != CHECKPOINT_VERSION:
            raise ModelError(f'{path} is a {CHECKPOINT_FORMAT} of version {obj.get("version")!r}'
                             f'; this vpr_seq_ros reads version {CHECKPOINT_VERSION}: use the '
                             'vpr_seq_ros release that wrote it')
        kind = obj.get('kind')
        kinds = checkpoint_kinds()
        if kind not in kinds:
            raise ModelError(f'{path} has kind {kind!r}; expected one of {", ".join(kinds)}')
        state_dict = obj.get('state_dict')
        if not isinstance(state_dict, Mapping):
            raise ModelError(f'{path} has no state_dict mapping; the file is damaged')
        meta = {k: v for k, v in obj.items()
                if k not in ('format', 'version', 'kind', 'state_dict')}
        return state_dict, meta, kind
    for wrapper in ('state_dict', 'model_state_dict'):  # SeqMatchNet / JIST training dicts
        if isinstance(obj.get(wrapper), Mapping):
            return obj[wrapper], {}, None
    return obj, {}, None


def _detect_layout(keys: list[str], path: Path) -> tuple[str, str]:
    """(layout, kind) from the first registered plugin that recognises the keys."""
    for plugin in all_plugins():
        layout = plugin.detect_layout(keys)
        if layout is not None and plugin.checkpoint_kind:
            return layout, plugin.checkpoint_kind
    raise ModelError(
        f'{path} has no layout this tool knows (first keys: {_some(sorted(keys))}); expected the '
        'official JIST, CosPlace ResNet18_512, torchvision resnet18 or SeqMatchNet weights, or a '
        f'checkpoint written by vpr_seq_ros (see {_README})')


def _all_finite(value: torch.Tensor) -> bool:
    # min and max propagate NaN and reach any infinity, without a mask the size of the tensor
    low, high = torch.aminmax(value.float())
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint file (``map_location='cpu'``, ``weights_only=True``) and recognise it.

    Args:
        path: checkpoint file.

    Returns:
        The unwrapped :class:`Checkpoint`.

    Raises:
        ModelError: missing or unreadable file, unknown format or layout, non-tensor or
            non-finite values.
    """
    path = Path(path)
    obj = _torch_load(path)
    raw, meta, kind = _unwrap(obj, path)
    state_dict = strip_module_prefix(raw)
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f'{path}: state_dict entry {key} is a {type(value).__name__}, not a '
                             'tensor; the file is not a state_dict')
        if value.is_floating_point() and value.numel() and not _all_finite(value):
            raise ModelError(f'{path}: {key} holds NaN or infinite values; the weights are '
                             'damaged (re-download or re-train them)')
    if kind is not None:
        layout = f'vpr_seq_ros/{kind}'
    else:
        layout, kind = _detect_layout(list(state_dict), path)
    _LOG.debug('read %s: layout %s, %d tensors', path, layout, len(state_dict))
    return Checkpoint(path=path, sha256=file_sha256(path), layout=layout, kind=kind,
                      state_dict=state_dict, meta=meta)


def key_problems(expected: Iterable[str], given: Iterable[str]) -> list[str]:
    """Messages naming the missing and the unexpected keys of a state dict (empty if none)."""
    expected, given = list(expected), list(given)
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    problems = []
    if missing:
        problems.append(f'missing keys: {_some(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_some(unexpected)}')
    return problems


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str, expected_layout: str) -> None:
    """Load every tensor of ``module`` from ``state_dict`` with nothing left over.

    Missing ``num_batches_tracked`` BatchNorm counters (absent from old torchvision files) are
    tolerated: they do not affect inference.

    Args:
        module: the module to fill.
        state_dict: tensors keyed as ``module.state_dict()``.
        source: what the tensors come from, for messages (e.g. the file path).
        expected_layout: human name of the layout the keys must follow, for messages.

    Raises:
        ModelError: naming the missing and unexpected keys and every shape mismatch.
    """
    expected = module.state_dict()
    given = dict(state_dict)
    for key, value in expected.items():
        if key.endswith('num_batches_tracked') and key not in given:
            given[key] = value.clone()
    problems = key_problems(expected, given)
    for key, value in expected.items():
        if key in given and tuple(given[key].shape) != tuple(value.shape):
            problems.append(f'{key} has shape {_shape(given[key].shape)}, expected '
                            f'{_shape(value.shape)}')
    if problems:
        raise ModelError(f'{source} does not fit the {expected_layout} layout: '
                         + '; '.join(problems)
                         + f'. Check that the file holds the weights you meant (see {_README}).')
    module.load_state_dict(given, strict=True)


@dataclass
class LoadedJist:
    """A JIST network ready for inference (eval mode, CPU) and what it was made from.

    Attributes:
        net: the network.
        weights_sha256: SHA-256 of the checkpoint file, or None for random weights.
        layout: the checkpoint layout, or ``random``.
        random_init: the weights are seeded random (seed 0).
        untrained_head: the GeM p, Linear and SeqGeM p were not learnt (torchvision trunk).
        path: the checkpoint file, or None.
    """

    net: JistNet
    weights_sha256: str | None
    layout: str
    random_init: bool
    untrained_head: bool
    path: Path | None


def load_jist(weights: str | Path | None, random_init: bool = False) -> LoadedJist:
    """Build the JIST network from a checkpoint, or from seeded random weights on request.

    Args:
        weights: a checkpoint in one of the ``jist-r18`` layouts, or None.
        random_init: with ``weights`` None, use seeded random weights (seed 0); tests and
            benchmarks only. Ignored when ``weights`` is given.

    Returns:
        The loaded network (eval mode) and its provenance.

    Raises:
        ModelError: no weights and no ``random_init``; the file is missing, unreadable, of
            another kind (a SeqMatchNet transform), or does not fit (keys and shapes named).
    """
    if weights is None:
        if not random_init:
            raise ModelError('jist-r18 needs --weights PATH (see models/README.md) or '
                             '--random-init for tests')
        _LOG.warning('jist-r18 uses seeded RANDOM weights (seed %d): descriptors are '
                     'meaningless for place recognition (tests and benchmarks only)', RANDOM_SEED)
        net = new_jist_net(seed=RANDOM_SEED).eval()
        return LoadedJist(net, None, LAYOUT_RANDOM, True, False, None)
    ckpt = read_checkpoint(weights)
    if ckpt.kind != 'jist-r18':
        raise ModelError(f'{ckpt.path} holds a {ckpt.kind} transform, not jist-r18 encoder '
                         'weights; give it as encoder.transform.weights with '
                         'encoder.transform.name seqmatchnet (vpr-seq: --transform seqmatchnet '
                         f'--transform-weights {ckpt.path})')
    net = new_jist_net(seed=RANDOM_SEED)
    untrained_head = bool(ckpt.meta.get('untrained_head', False))
    if ckpt.layout in (LAYOUT_JIST, 'vpr_seq_ros/jist-r18'):
        load_state_dict_strict(net, ckpt.state_dict, str(ckpt.path), 'official JIST')
    elif ckpt.layout == LAYOUT_COSPLACE:
        load_state_dict_strict(net.model, ckpt.state_dict, str(ckpt.path), 'CosPlace')
        _LOG.info('%s is a CosPlace checkpoint: SeqGeM p stays at its initial value 3',
                  ckpt.path)
    else:  # torchvision ImageNet trunk
        trunk = ResNet18Trunk()
        trunk_sd = {k: v for k, v in ckpt.state_dict.items() if not k.startswith('fc.')}
        load_state_dict_strict(trunk, trunk_sd, str(ckpt.path), 'torchvision resnet18')
        net = JistNet(trunk)
        init_head_identity(net)
        untrained_head = True
        _LOG.warning('%s is a torchvision ImageNet resnet18: only the trunk is learnt; the '
                     'head (GeM p = 3, Linear = identity, SeqGeM p = 3) is UNTRAINED',
                     ckpt.path)
    _LOG.info('loaded jist-r18 weights %s (layout %s, sha256 %s)', ckpt.path, ckpt.layout,
              ckpt.sha256[:12])
    return LoadedJist(net.eval(), ckpt.sha256, ckpt.layout, False, untrained_head, ckpt.path)


def _check_meta(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_meta(item, f'{where}[{i}]')
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ModelError(f'checkpoint metadata {where} has a non-string key {key!r}')
            _check_meta(item, f'{where}.{key}')
        return
    raise ModelError(f'checkpoint metadata {where} is a {type(value).__name__}; use plain '
                     'values (str, int, float, bool, None, lists, dicts)')


def save_checkpoint(path: str | Path, kind: str, state_dict: Mapping[str, torch.Tensor],
                    **meta: Any) -> Path:
    """Write a project checkpoint atomically (temporary file, then ``os.replace``).

    Args:
        path: destination file (parent folders are created).
        kind: a plugin's ``checkpoint_kind``: ``jist-r18`` (a :class:`JistNet` state_dict) or
            ``seqmatchnet`` (a :class:`~vpr_seq_ros.models.seqmatchnet.SeqMatchNetTransform`
            state_dict).
        state_dict: the tensors; saved detached, on the CPU.
        **meta: plain metadata (e.g. ``epoch=3``, ``recall_at_1=0.9``, ``untrained_head``).

    Returns:
        The written path.

    Raises:
        ModelError: unknown kind, reserved or non-plain metadata, non-tensor entries.
    """
    kinds = checkpoint_kinds()
    if kind not in kinds:
        raise ModelError(f'checkpoint kind {kind!r} is not one of {", ".join(kinds)}')
    reserved = {'format', 'version', 'kind', 'state_dict'} & set(meta)
    if reserved:
        raise ModelError(f'checkpoint metadata may not be named {", ".join(sorted(reserved))}')
    _check_meta(meta, 'meta')
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f'state_dict entry {key} is a {type(value).__name__}, not a tensor')
        tensors[key] = value.detach().cpu().clone()
    payload = {'format': CHECKPOINT_FORMAT, 'version': CHECKPOINT_VERSION, 'kind': kind,
               'state_dict': tensors, **meta}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ModelError(f'cannot write checkpoint {path}: {err}') from err
    _LOG.info('saved %s checkpoint %s', kind, path)
    return path
