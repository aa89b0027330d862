"""Typed configuration of offline training: frozen dataclasses, unknown keys rejected.

The schema follows the data flow of each trainer (data -> model -> loss / mining -> optimiser ->
validation -> run). It is built with the same dict conversion as the pipeline's schema
(:mod:`vpr_seq_ros.config`), and reuses its sections where they mean the same thing: the base
frame encoder of SeqMatchNet is an :class:`~vpr_seq_ros.config.EncoderConfig`, its sequence
windows a :class:`~vpr_seq_ros.config.SequenceConfig`.

Relative paths in a YAML file (``data.manifest``, ``data.cache_dir``, ``output_dir``,
``encoder.weights``, ``init.weights``) are resolved against the folder of that file; paths given
on the command line or in Python stay relative to the working directory.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TypeVar

from vpr_seq_ros.config import (EncoderConfig, SequenceConfig, _choice, _from_dict, _positive,
                                _read_yaml, merge, to_dict, unflatten)
from vpr_seq_ros.errors import ConfigError

DISTANCES = ('single', 'seqmatch')
"""Ablation switches of SeqMatchNet: the anchor frame only (L = 1), or the sequence distance."""
TRAIN_DEVICES = ('cpu', 'cuda', 'auto')
FIRST_TRAINABLE = ('conv1', 'layer1', 'layer2', 'layer3', 'layer4', 'head')
"""JIST: the first trainable stage of the ResNet-18 trunk; everything before it is frozen."""

SEQMATCHNET_MARGIN = math.sqrt(0.1)


def _top_positive(name: str, value: float, allow_zero: bool = False) -> None:
    """Check a top-level field (no section in its name)."""
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f'{name} = {value!r} must be {">= 0" if allow_zero else "> 0"}')


def _top_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f'{name} = {value!r} is not one of {", ".join(choices)}')


@dataclass(frozen=True)
class DataConfig:
    """Where the training data is described, and where frozen outputs are cached.

    Attributes:
        manifest: the manifest YAML (traverses, splits, radii); see
            :mod:`vpr_seq_ros.training.manifest`.
        cache_dir: folder for cached frame descriptors / resized images, keyed by what made
            them (None: no cache, everything is recomputed).
    """

    manifest: str = ''
    cache_dir: str | None = None


@dataclass(frozen=True)
class ValidationConfig:
    """Validation after every epoch.

    Attributes:
        recall_at: the K of the reported Recall@K.
        select_recall_at: model selection by this validation Recall@K (ties: the higher
            Recall@1, then the earlier epoch).
    """

    recall_at: tuple[int, ...] = (1, 5, 10, 20)
    select_recall_at: int = 5

    def __post_init__(self) -> None:
        if not self.recall_at:
            raise ConfigError('validation.recall_at must hold at least one K')
        for k in self.recall_at:
            _positive('validation', 'recall_at', k)
        if self.select_recall_at not in self.recall_at:
            raise ConfigError(f'validation.select_recall_at = {self.select_recall_at} must be one '
                              f'of validation.recall_at {list(self.recall_at)}')


# --------------------------------------------------------------------------- SeqMatchNet


@dataclass(frozen=True)
class SeqMatchNetLossConfig:
    """The triplet hinge ``mean(max(d(q, p) - d(q, n) + margin, 0))``.

    Attributes:
        distance: ``seqmatch`` (mean aligned Euclidean distance over the L frames, the paper)
            or ``single`` (the anchor frame only, L = 1; the paper's ablation).
        margin: hinge margin (the official code uses sqrt(0.1)).
    """

    distance: str = 'seqmatch'
    margin: float = SEQMATCHNET_MARGIN

    def __post_init__(self) -> None:
        _choice('loss', 'distance', self.distance, DISTANCES)
        _positive('loss', 'margin', self.margin)


@dataclass(frozen=True)
class SeqMatchNetMiningConfig:
    """Hard-negative mining over the whole training map.

    Attributes:
        distance: ``seqmatch`` (the convolution-based sequence distance matrix) or ``single``
            (anchor frames only, L = 1).
        num_negatives: at most this many margin-violating negatives per query (hardest first).
        refresh_every: recompute the mining matrix with the current model every this many
            training queries.
    """

    distance: str = 'seqmatch'
    num_negatives: int = 10
    refresh_every: int = 1000

    def __post_init__(self) -> None:
        _choice('mining', 'distance', self.distance, DISTANCES)
        _positive('mining', 'num_negatives', self.num_negatives)
        _positive('mining', 'refresh_every', self.refresh_every)


@dataclass(frozen=True)
class SgdConfig:
    """SGD with a step learning-rate schedule (the SeqMatchNet defaults).

    Attributes:
        lr: learning rate.
        momentum: momentum.
        weight_decay: L2 weight decay.
        step_size: halve (``gamma``) the learning rate every this many epochs.
        gamma: learning-rate factor of each step.
    """

    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    step_size: int = 5
    gamma: float = 0.5

    def __post_init__(self) -> None:
        _positive('optimizer', 'lr', self.lr)
        _positive('optimizer', 'momentum', self.momentum, allow_zero=True)
        _positive('optimizer', 'weight_decay', self.weight_decay, allow_zero=True)
        _positive('optimizer', 'step_size', self.step_size)
        _positive('optimizer', 'gamma', self.gamma)


@dataclass(frozen=True)
class SeqMatchNetTrainConfig:
    """Training of SeqMatchNet's transform ``y = L2norm(W x + b)`` on a frozen base encoder.

    Attributes:
        data: manifest and cache.
        encoder: the frozen base frame encoder (``npy``, ``patchnorm`` or ``jist-r18``);
            ``encoder.transform`` must be ``none`` (the transform is what is trained).
        sequence: L and the window placement of training, mining and validation sequences.
        loss: the triplet hinge.
        mining: hard-negative mining.
        optimizer: SGD and its schedule.
        validation: Recall@K and model selection.
        batch_size: training queries per step.
        epochs: epochs in total (a resumed run continues up to this number).
        seed: seed of every random choice (query order, initialisation).
        device: ``cpu``, ``cuda`` or ``auto``.
        output_dir: the run folder (checkpoints, resolved config, command line, history).
    """

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    loss: SeqMatchNetLossConfig = field(default_factory=SeqMatchNetLossConfig)
    mining: SeqMatchNetMiningConfig = field(default_factory=SeqMatchNetMiningConfig)
    optimizer: SgdConfig = field(default_factory=SgdConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    batch_size: int = 16
    epochs: int = 50
    seed: int = 123
    device: str = 'auto'
    output_dir: str = 'runs/seqmatchnet'

    def __post_init__(self) -> None:
        if not self.data.manifest:
            raise ConfigError('data.manifest is required: the YAML file that lists the '
                              'traverses and splits (see config/training/)')
        if self.encoder.transform.name != 'none':
            raise ConfigError('encoder.transform must be none when training SeqMatchNet: the '
                              'transform is what is trained; encoder names the frozen base')
        _top_positive('batch_size', self.batch_size)
        _top_positive('epochs', self.epochs)
        _top_positive('seed', self.seed, allow_zero=True)
        _top_choice('device', self.device, TRAIN_DEVICES)


# --------------------------------------------------------------------------- JIST


@dataclass(frozen=True)
class JistInitConfig:
    """Where JIST training starts.

    Attributes:
        weights: a JIST, CosPlace ResNet18_512 or torchvision resnet18 checkpoint, or one
            written by vpr_seq_ros.
        random_init: start from seeded random weights (tests only); required when
            ``weights`` is not given, so that a missing path can never train from noise.
    """

    weights: str | None = None
    random_init: bool = False


@dataclass(frozen=True)
class JistSequenceBranchConfig:
    """The sequence branch: triplets of SeqGeM sequence descriptors.

    Attributes:
        length: L, frames per sequence.
        batch_size: triplets per step.
        num_negatives: hardest negatives per triplet.
        margin: triplet margin (L2 on un-normalised SeqGeM descriptors).
        weight: factor of the triplet loss (JIST's ``lambda_triplet``).
        cached_queries: random training queries whose descriptors are cached per sub-epoch.
        cached_negatives: random database sequences cached per sub-epoch (negative pool).
        sub_epochs: cache refreshes per epoch; an epoch has
            ``sub_epochs * (cached_queries // batch_size)`` steps.
    """

    length: int = 5
    batch_size: int = 4
    num_negatives: int = 5
    margin: float = 0.1
    weight: float = 1e4
    cached_queries: int = 1000
    cached_negatives: int = 3000
    sub_epochs: int = 10

    def __post_init__(self) -> None:
        for name in ('length', 'batch_size', 'num_negatives', 'cached_queries',
                     'cached_negatives', 'sub_epochs'):
            _positive('sequence', name, getattr(self, name))
        _positive('sequence', 'margin', self.margin)
        _positive('sequence', 'weight', self.weight, allow_zero=True)


@dataclass(frozen=True)
class JistImageBranchConfig:
    """The image branch: CosFace on place classes grouped as CosPlace does.

    Training frames are binned into classes of ``cell_size`` (metres, or frames for
    ``ground_truth.by: index``) x ``heading_bin_deg`` degrees of yaw; classes are split into
    groups so that neighbouring classes never share a group (``cells_per_group`` cells along each
    axis, ``headings_per_group`` heading bins). One group, with its own classifier, is trained per
    epoch (``epoch % groups``).

    Attributes:
        enabled: train the image branch (off: the sequence branch alone).
        batch_size: images per step.
        cell_size: M, the side of a place cell.
        heading_bin_deg: alpha, the width of a heading bin (ignored without yaw).
        cells_per_group: N.
        headings_per_group: L of CosPlace (heading bins per group).
        groups: how many groups are used.
        min_images_per_class: classes with fewer images are left out.
        scale: CosFace s.
        margin: CosFace m.
        weight: factor of the image loss (JIST's ``lambda_im2im``).
        lr: Adam learning rate of the classifiers.
        augment: colour jitter (brightness, contrast, saturation 0.7) and random resized crops
            (scale 0.5 .. 1), as CosPlace (hue jitter is not applied).
    """

    enabled: bool = True
    batch_size: int = 64
    cell_size: float = 10.0
    heading_bin_deg: float = 30.0
    cells_per_group: int = 5
    headings_per_group: int = 2
    groups: int = 8
    min_images_per_class: int = 10
    scale: float = 30.0
    margin: float = 0.4
    weight: float = 100.0
    lr: float = 1e-2
    augment: bool = True

    def __post_init__(self) -> None:
        for name in ('batch_size', 'cell_size', 'heading_bin_deg', 'cells_per_group',
                     'headings_per_group', 'groups', 'min_images_per_class', 'scale', 'lr'):
            _positive('image', name, getattr(self, name))
        _positive('image', 'margin', self.margin, allow_zero=True)
        _positive('image', 'weight', self.weight, allow_zero=True)


@dataclass(frozen=True)
class JistTrainConfig:
    """Joint image and sequence training of JIST (ResNet-18 / 512 / SeqGeM).

    Attributes:
        data: manifest and cache.
        init: the starting weights.
        input_height: frame height in pixels fed to the network.
        input_width: frame width in pixels.
        first_trainable: the first trainable trunk stage; earlier ones are frozen
            (``layer4``: layer4, GeM, the head Linear and SeqGeM train, as JIST).
        lr: Adam learning rate of the network.
        sequence: the sequence branch.
        image: the image branch.
        validation: Recall@K (SeqGeM, nearest neighbour) and model selection.
        eval_batch_size: frames per forward pass when caching and validating.
        epochs: epochs in total.
        seed: seed of every random choice.
        device: ``cpu``, ``cuda`` or ``auto``.
        amp: mixed precision (fp16 autocast and gradient scaling) on CUDA; ignored on the CPU.
        output_dir: the run folder.
    """

    data: DataConfig = field(default_factory=DataConfig)
    init: JistInitConfig = field(default_factory=JistInitConfig)
    input_height: int = 480
    input_width: int = 640
    first_trainable: str = 'layer4'
    lr: float = 1e-5
    sequence: JistSequenceBranchConfig = field(default_factory=JistSequenceBranchConfig)
    image: JistImageBranchConfig = field(default_factory=JistImageBranchConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    eval_batch_size: int = 16
    epochs: int = 5
    seed: int = 0
    device: str = 'auto'
    amp: bool = True
    output_dir: str = 'runs/jist'

    def __post_init__(self) -> None:
        if not self.data.manifest:
            raise ConfigError('data.manifest is required: the YAML file that lists the '
                              'traverses and splits (see config/training/)')
        if self.init.weights is None and not self.init.random_init:
            raise ConfigError('init.weights is not set: give a JIST, CosPlace or torchvision '
                              'resnet18 checkpoint (see models/README.md), or set '
                              'init.random_init: true to train from random weights on purpose')
        for name in ('input_height', 'input_width', 'eval_batch_size', 'epochs', 'lr'):
            _top_positive(name, getattr(self, name))
        _top_positive('seed', self.seed, allow_zero=True)
        _top_choice('first_trainable', self.first_trainable, FIRST_TRAINABLE)
        _top_choice('device', self.device, TRAIN_DEVICES)


# --------------------------------------------------------------------------- loading

TrainConfig = TypeVar('TrainConfig', SeqMatchNetTrainConfig, JistTrainConfig)

_PATH_KEYS = (('data', 'manifest'), ('data', 'cache_dir'), ('output_dir',),
              ('encoder', 'weights'), ('init', 'weights'))


def _resolve_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Make the relative paths of a YAML mapping relative to ``folder``."""
    out = dict(data)
    for keys in _PATH_KEYS:
        node: Any = out
        for key in keys[:-1]:
            child = node.get(key) if isinstance(node, Mapping) else None
            if not isinstance(child, Mapping):
                node = None
                break
            node[key] = dict(child)
            node = node[key]
        if not isinstance(node, dict):
            continue
        value = node.get(keys[-1])
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            node[keys[-1]] = os.path.normpath(path if path.is_absolute() else folder / path)
    return out


def train_config_from_dict(cls: type[TrainConfig], data: Mapping[str, Any]) -> TrainConfig:
    """Build a training configuration from a nested mapping; unknown keys are errors."""
    return _from_dict(cls, data)


def load_train_config(cls: type[TrainConfig], file: str | Path | None = None,
                      overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Resolve a training configuration: defaults < YAML file < dotted overrides.

    Args:
        cls: :class:`SeqMatchNetTrainConfig` or :class:`JistTrainConfig`.
        file: YAML file; its relative paths are taken relative to its folder.
        overrides: dotted keys (``{'epochs': 3, 'optimizer.lr': 0.01}``); None values are
            ignored.

    Raises:
        ConfigError: unreadable file, unknown key, invalid value.
    """
    data: dict[str, Any] = {}
    if file is not None:
        path = Path(file)
        data = _resolve_paths(_read_yaml(path), path.resolve().parent)
    if overrides:
        data = merge(data, unflatten({k: v for k, v in overrides.items() if v is not None}))
    return train_config_from_dict(cls, data)


__all__ = ['DataConfig', 'JistImageBranchConfig', 'JistInitConfig', 'JistSequenceBranchConfig',
           'JistTrainConfig', 'SeqMatchNetLossConfig', 'SeqMatchNetMiningConfig',
           'SeqMatchNetTrainConfig', 'SgdConfig', 'ValidationConfig', 'load_train_config',
           'to_dict', 'train_config_from_dict']
