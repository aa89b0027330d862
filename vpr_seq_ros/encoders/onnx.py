"""Any exportable encoder on onnxruntime, from its model card (no torch needed).

The card (written by ``vpr-seq export-onnx``, read by
:func:`vpr_seq_ros.models.onnx_export.read_model_card`) names the fp32 graph and, when exported
with int8, the statically quantised one. Frames are resized by the plugin's
:meth:`~vpr_seq_ros.encoders.base.EncoderPlugin.preprocess` and run through the graph; the
settings are the plugin's :meth:`~vpr_seq_ros.encoders.base.EncoderPlugin.card_settings`, equal
to the torch encoder's for the same weights.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from vpr_seq_ros.encoders.base import FrameEncoder
from vpr_seq_ros.errors import ConfigError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import EncoderConfig
    from vpr_seq_ros.encoders.base import EncoderPlugin
    from vpr_seq_ros.models.onnx_export import ModelCard

_LOG = logging.getLogger(__name__)


class OnnxEncoder(FrameEncoder):
    """An exported frame encoder on onnxruntime, at fp32 or int8."""

    def __init__(self, plugin: EncoderPlugin, card: ModelCard, precision: str = 'fp32',
                 device: str = 'cpu', batch_size: int = 16,
                 num_threads: int | None = None) -> None:
        """Open the graph of a card.

        Args:
            plugin: the encoder's plugin (preprocessing and settings).
            card: the model card.
            precision: ``fp32`` or ``int8`` (the card's quantised graph).
            device: ``cpu``, ``cuda`` or ``auto``.
            batch_size: frames per run.
            num_threads: onnxruntime intra-op threads; None leaves its default.

        Raises:
            ModelError: int8 asked for but the card has no quantised graph.
        """
        from vpr_seq_ros.models.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_session

        if precision == 'int8':
            if card.int8_onnx_file is None:
                raise ModelError(f'model card {card.path} has no int8 model; export it with '
                                 'precision int8 and calibration frames of your own run')
            from vpr_seq_ros.encoders.precision import ParityReport

            path = card.int8_onnx_path
            if card.int8_parity:  # the gate it passed at export, on the user's frames
                self.parity = ParityReport.from_dict('int8', card.int8_parity)
        else:
            path = card.onnx_path
        self.name = card.encoder
        self.input_kind = plugin.input_kind
        self.precision = precision
        self.seqgem_p = None if card.seqgem_p is None else float(card.seqgem_p)
        self._plugin = plugin
        self._card = card
        self._batch_size = batch_size
        self._session = onnx_session(path, device, num_threads)
        self._input = INPUT_NAME
        self._output = OUTPUT_NAME

    @property
    def dim(self) -> int:
        return int(self._card.descriptor_dim)

    def settings(self) -> dict[str, Any]:
        return {**self._plugin.card_settings(self._card), **self.precision_settings()}

    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Encode images ``(H, W, 3)`` uint8 RGB of any size to ``(B, D)`` float32.

        Raises:
            SourceError: a bad image (its index is named).
        """
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        height, width = self._card.input_height, self._card.input_width
        for start in range(0, len(inputs), self._batch_size):
            chunk = inputs[start:start + self._batch_size]
            x = self._plugin.preprocess(chunk, height, width)
            out[start:start + len(chunk)] = self._session.run([self._output],
                                                              {self._input: x})[0]
        return out


def build_onnx_encoder(plugin: EncoderPlugin, cfg: EncoderConfig, precision: str = 'fp32',
                       num_threads: int | None = None) -> OnnxEncoder:
    """The :class:`OnnxEncoder` of the card ``cfg.weights``, checked against ``cfg``.

    Raises:
        ModelError: no card, a card of another encoder or input size, no int8 graph.
        ConfigError: a precision onnxruntime does not run here (bf16, fp16).
    """
    from vpr_seq_ros.models.onnx_export import read_model_card

    weights = cfg.weights
    if weights is None:
        raise ModelError(f'{plugin.name} on the onnx runtime needs the model card .yaml written '
                         'by vpr-seq export-onnx as its weights (also for random weights: '
                         'export them first); see models/README.md')
    if not str(weights).endswith(('.yaml', '.yml')):
        raise ModelError(f'the onnx runtime takes the model card .yaml written by vpr-seq '
                         f'export-onnx, not {weights}')
    if precision not in ('fp32', 'int8'):
        raise ConfigError(f'encoder.precision {precision} runs on the torch runtime; the onnx '
                          'runtime runs fp32 and int8')
    card = read_model_card(weights)
    if card.encoder != plugin.name:
        raise ModelError(f'model card {weights} is for encoder {card.encoder}, not {plugin.name}')
    if (card.input_height, card.input_width) != (cfg.input_height, cfg.input_width):
        raise ModelError(
            f'model card {weights} was exported for {card.input_height}x{card.input_width} '
            f'input, the configuration asks for {cfg.input_height}x{cfg.input_width}; set '
            'encoder.input_height/input_width to match or re-export at that input size')
    return OnnxEncoder(plugin, card, precision, cfg.device, cfg.batch_size, num_threads)
