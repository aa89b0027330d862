"""The frame-encoder contract, written down once, and the plugin every encoder provides.

**Frame encoder** (:class:`FrameEncoder`): ``encode(frames) -> (B, D) float32``, where ``frames``
is a batch of ``B`` images, each ``(H, W, 3)`` uint8 RGB of any size (a ``(B, H, W, 3)`` array or
a list; ``(H, W)`` grey and ``(H, W, 4)`` RGBA are accepted), or, for an encoder whose
``input_kind`` is ``'descriptor'`` (``npy``), ``B`` precomputed descriptors ``(D_in,)`` float32.
The encoder owns its preprocessing and its normalisation (a learnt model applies ``x / 255`` and
the ImageNet mean/std inside its graph, so an exported ONNX model carries them).
:meth:`FrameEncoder.settings` is a JSON-ready dict naming **everything that determines the
output** (name, input size, weights checksum, normalisation, precision, ...). A map stores it
and refuses queries whose settings differ (:func:`comparable_settings` says what is compared).

**Plugin** (:class:`EncoderPlugin`): one per encoder, registered by name in
:mod:`vpr_seq_ros.encoders.registry`. It builds the encoder from an
:class:`~vpr_seq_ros.config.EncoderConfig`, says which numeric precisions it can run at on this
machine, which checkpoint layouts it loads, and whether and how it exports to ONNX (the exported
graph takes ``(B, 3, H, W)`` uint8 RGB resized by :meth:`EncoderPlugin.preprocess` and returns
``(B, D)`` float32). A :class:`TransformPlugin` is a stage after any frame encoder,
``(B, D_in) -> (B, D_out)``.

**Precision rule** (maps and queries): ``precision`` (``fp32``, ``bf16``, ``fp16``, ``int8``) and
``parity`` are recorded in the settings but not compared. A reduced precision is only ever used
after its parity gate held against fp32 on calibration frames (descriptor cosine >= 0.999 on
every frame and the same top-1 match among the frames, see
:mod:`vpr_seq_ros.encoders.precision`), so its descriptors stand in for fp32 ones: a map built
at one precision can be queried at another. Every other setting must be equal.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from vpr_seq_ros.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import EncoderConfig, TransformConfig
    from vpr_seq_ros.encoders.precision import Capabilities, ParityReport
    from vpr_seq_ros.models.onnx_export import ModelCard

PRECISION_KEYS = ('precision', 'parity')
"""Settings recorded but left out of the map/query comparison (see the precision rule)."""


class FrameEncoder(ABC):
    """Base class of frame encoders (the contract is in the module docstring).

    Attributes:
        name: registry name (``patchnorm``, ``npy``, ``jist-r18``, ...).
        input_kind: ``'image'`` or ``'descriptor'``: what :meth:`encode` takes.
        seqgem_p: learnt SeqGeM exponent carried by the model, or None.
        precision: the numeric precision it runs at (``fp32`` unless reduced).
        parity: the parity gate that admitted a reduced precision, or None.
    """

    name: str = ''
    input_kind: str = 'image'
    seqgem_p: float | None = None
    precision: str = 'fp32'
    parity: ParityReport | None = None

    @property
    @abstractmethod
    def dim(self) -> int:
        """Descriptor dimension D (-1 while unknown, e.g. ``npy`` before its first call)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable description of everything that determines the output."""

    @abstractmethod
    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Encode a batch.

        Args:
            inputs: ``B`` images ``(H, W, 3)`` uint8 RGB, or ``B`` descriptors ``(D_in,)``.

        Returns:
            ``(B, D)`` float32 descriptors.
        """

    def precision_settings(self) -> dict[str, Any]:
        """``{'precision': ...}`` plus the parity figures of a reduced precision."""
        out: dict[str, Any] = {'precision': self.precision}
        if self.parity is not None:
            out['parity'] = self.parity.as_dict()
        return out


class Support(NamedTuple):
    """Whether an encoder can run at a precision here.

    Attributes:
        runnable: it can run at all (else asking for it is an error).
        native: the hardware has a fast path for it (``auto`` only tries native paths).
        why: what decided it (CPU flags, runtime, device), for logs and errors.
    """

    runnable: bool
    native: bool
    why: str


@dataclass(frozen=True)
class ExportModel:
    """What a plugin hands to the ONNX exporter.

    Attributes:
        net: a torch module, ``(B, 3, H, W)`` uint8 RGB -> ``(B, D)`` float32, eval mode, CPU.
        dim: D.
        weights_sha256: SHA-256 of the weights file, or None for random weights.
        weights_layout: the checkpoint layout, or ``random``.
        random_init: seeded random weights.
        untrained_head: part of the model was not learnt.
        seqgem_p: a learnt SeqGeM exponent carried by the model, or None.
    """

    net: Any
    dim: int
    weights_sha256: str | None
    weights_layout: str
    random_init: bool
    untrained_head: bool = False
    seqgem_p: float | None = None


class StagePlugin(ABC):  # noqa: B024 - a base with defaults; subclasses add abstract build
    """What encoder and transform plugins share: a name and the checkpoints they load.

    Attributes:
        name: registry name.
        checkpoint_kind: the ``kind`` of this project's checkpoints holding its weights
            (``vpr_seq_ros.checkpoint``), or None for a stage without weights.
        checkpoint_layouts: the checkpoint layouts it loads (see :meth:`detect_layout`).
    """

    name: str = ''
    checkpoint_kind: str | None = None
    checkpoint_layouts: tuple[str, ...] = ()

    def detect_layout(self, keys: Sequence[str]) -> str | None:
        """The layout (one of :attr:`checkpoint_layouts`) a state_dict's keys follow, or None.

        Args:
            keys: the state_dict's keys, DataParallel ``module.`` segments removed.
        """
        return None


class EncoderPlugin(StagePlugin):
    """One frame encoder: how to build it, its precisions, checkpoints and ONNX export.

    Attributes:
        input_kind: ``'image'`` or ``'descriptor'``.
        precisions: the concrete precisions it implements (``('fp32',)`` for an encoder
            without a learnt model; learnt ones add ``bf16``, ``fp16``, ``int8``).
        exportable: it exports to ONNX (then :meth:`export_model` is implemented).
    """

    input_kind: str = 'image'
    precisions: tuple[str, ...] = ('fp32',)
    exportable: bool = False

    @abstractmethod
    def build(self, cfg: EncoderConfig, precision: str = 'fp32',
              num_threads: int | None = None) -> FrameEncoder:
        """Build the encoder at one concrete precision (no parity gate: see
        :func:`vpr_seq_ros.encoders.build_encoder`).

        Args:
            cfg: the encoder section of the configuration.
            precision: ``fp32``, or one of :attr:`precisions` that :meth:`precision_support`
                says is runnable.
            num_threads: intra-op threads of its runtime; None leaves the default.

        Raises:
            ConfigError: settings this encoder or machine cannot serve.
            ModelError: weights missing or not fitting.
        """

    def precision_support(self, cfg: EncoderConfig, caps: Capabilities) -> dict[str, Support]:
        """For every precision in :attr:`precisions` but fp32: can it run here, and fast?"""
        return {}

    def preprocess(self, frames: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
        """Frames -> the exported graph's input ``(B, 3, height, width)`` uint8 RGB (NCHW).

        The default resizes like :func:`vpr_seq_ros.preprocess.preprocess_batch`.
        """
        from vpr_seq_ros.preprocess import preprocess_batch

        return np.ascontiguousarray(preprocess_batch(frames, height, width))

    def export_model(self, cfg: EncoderConfig) -> ExportModel:
        """The torch module to export and its provenance (exportable encoders only)."""
        raise ConfigError(f'encoder {self.name!r} cannot be exported to ONNX')

    def card_settings(self, card: ModelCard) -> dict[str, Any]:
        """The settings of the encoder an ONNX model card describes (without precision).

        Must equal the torch encoder's settings for the same weights, so that maps built with
        either runtime match. The default suits encoders whose settings are their input size
        and weights.
        """
        return {'name': card.encoder, 'input_height': int(card.input_height),
                'input_width': int(card.input_width), 'weights_sha256': card.weights_sha256,
                'random_init': bool(card.random_init),
                'untrained_head': bool(card.untrained_head)}

    def build_onnx(self, cfg: EncoderConfig, precision: str = 'fp32',
                   num_threads: int | None = None) -> FrameEncoder:
        """The encoder running the ONNX model of the card ``cfg.weights`` on onnxruntime.

        Raises:
            ModelError: no card, a card of another encoder or input size, or (int8) a card
                without a quantised model.
        """
        from vpr_seq_ros.encoders.onnx import build_onnx_encoder

        return build_onnx_encoder(self, cfg, precision, num_threads)


class TransformPlugin(StagePlugin):
    """A stage after any frame encoder: ``(B, D_in) -> (B, D_out)`` descriptors."""

    @abstractmethod
    def wrap(self, base: FrameEncoder, tcfg: TransformConfig) -> FrameEncoder:
        """``base`` followed by this stage.

        Raises:
            ModelError: weights missing or not fitting the base's dimension.
        """


def comparable_settings(settings: Any) -> Any:
    """``settings`` without the keys the map/query check leaves out (:data:`PRECISION_KEYS`),
    at every depth (a transform nests its base encoder's settings)."""
    if isinstance(settings, dict):
        return {k: comparable_settings(v) for k, v in settings.items()
                if k not in PRECISION_KEYS}
    return settings


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (weights checksum recorded in maps and model cards)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
