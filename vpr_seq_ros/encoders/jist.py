"""The ``jist-r18`` frame encoder: JIST's ResNet-18 / 512 CosPlace descriptor, torch or onnx.

Images ``(H, W, 3)`` uint8 RGB of any size are resized like the official code
(:mod:`vpr_seq_ros.preprocess`) and encoded to ``(B, 512)`` float32 unit-norm descriptors; the
learnt SeqGeM exponent is exposed as :attr:`seqgem_p` for the matcher.

Runtimes:

- ``torch``: eval mode, ``torch.inference_mode()``, channels-last memory format (faster on the
  CPU with oneDNN and on CUDA), optional fp16 autocast on CUDA. ``cfg.weights`` is a checkpoint.
- ``onnx``: onnxruntime with the settings of
  :func:`vpr_seq_ros.models.onnx_export.onnx_session`. ``cfg.weights`` is the model card
  ``.yaml`` written by ``vpr-seq export-onnx``. This path never imports torch.

Both runtimes report the same :meth:`settings` for the same weights (the card records the
checkpoint's SHA-256), so a map built with one can be queried with the other.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders.base import FrameEncoder
from vpr_seq_ros.errors import ConfigError, ModelError
from vpr_seq_ros.preprocess import preprocess_batch

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.models.checkpoints import LoadedJist
    from vpr_seq_ros.models.onnx_export import ModelCard

_LOG = logging.getLogger(__name__)

NAME = 'jist-r18'
DIM = 512


def jist_settings(input_height: int, input_width: int, weights_sha256: str | None,
                  random_init: bool, untrained_head: bool) -> dict[str, Any]:
    """The settings that identify a ``jist-r18`` descriptor space (same for both runtimes)."""
    return {'name': NAME, 'input_height': int(input_height), 'input_width': int(input_width),
            'weights_sha256': weights_sha256, 'random_init': bool(random_init),
            'untrained_head': bool(untrained_head)}


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class JistTorchEncoder(FrameEncoder):
    """``jist-r18`` on torch (CPU or CUDA)."""

    name = NAME
    input_kind = 'image'

    def __init__(self, loaded: LoadedJist, input_height: int = 480, input_width: int = 640,
                 device: str = 'cpu', fp16: bool = False, batch_size: int = 16,
                 channels_last: bool = True, num_threads: int | None = None) -> None:
        """Wrap a loaded network.

        Args:
            loaded: the network and its provenance (:func:`~vpr_seq_ros.models.load_jist`).
            input_height: model input height in pixels.
            input_width: model input width in pixels.
            device: ``cpu``, ``cuda`` or ``auto`` (CUDA if available).
            fp16: fp16 autocast (CUDA only).
            batch_size: frames per forward pass.
            channels_last: run in the channels-last memory format.
            num_threads: torch intra-op threads (process-wide); None leaves torch's default.

        Raises:
            ConfigError: CUDA asked for but unavailable, or fp16 without CUDA.
        """
        import torch

        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device == 'cuda' and not torch.cuda.is_available():
            raise ConfigError('encoder.device = cuda, but torch sees no CUDA device; use '
                              '--device cpu or auto')
        if fp16 and device != 'cuda':
            raise ConfigError('encoder.fp16 needs a CUDA device (--device cuda); CPU inference '
                              'runs in fp32')
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self._torch = torch
        self._loaded = loaded
        self._height = input_height
        self._width = input_width
        self._device = torch.device(device)
        self._fp16 = fp16
        self._batch_size = batch_size
        self._channels_last = channels_last
        net = loaded.net.eval().to(self._device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.seqgem_p = float(net.seq_gem.p.item())

    @property
    def dim(self) -> int:
        return DIM

    def settings(self) -> dict[str, Any]:
        return jist_settings(self._height, self._width, self._loaded.weights_sha256,
                             self._loaded.random_init, self._loaded.untrained_head)

    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Encode images.

        Args:
            inputs: ``B`` images ``(H, W, 3)`` uint8 RGB (grey and RGBA accepted), any size.

        Returns:
            ``(B, 512)`` float32 unit-norm descriptors.

        Raises:
            SourceError: a bad image (its index is named).
        """
        torch = self._torch
        out = np.empty((len(inputs), DIM), dtype=np.float32)
        row = 0
        for chunk in _chunks(inputs, self._batch_size):
            # (B, 3, H, W) view of an NHWC buffer: channels-last strides for free.
            x = torch.from_numpy(preprocess_batch(chunk, self._height, self._width))
            if not self._channels_last:
                x = x.contiguous()
            x = x.to(self._device, non_blocking=True)
            precision = (torch.autocast('cuda', dtype=torch.float16) if self._fp16
                         else contextlib.nullcontext())
            with torch.inference_mode(), precision:
                descriptors = self.net(x)
            out[row:row + len(chunk)] = descriptors.float().cpu().numpy()
            row += len(chunk)
        return out


class JistOnnxEncoder(FrameEncoder):
    """``jist-r18`` on onnxruntime (no torch needed)."""

    name = NAME
    input_kind = 'image'

    def __init__(self, card: ModelCard, device: str = 'cpu', batch_size: int = 16,
                 num_threads: int | None = None) -> None:
        """Open the ONNX model of a card.

        Args:
            card: the model card (:func:`~vpr_seq_ros.models.onnx_export.read_model_card`).
            device: ``cpu``, ``cuda`` or ``auto``.
            batch_size: frames per run.
            num_threads: onnxruntime intra-op threads; None leaves onnxruntime's default.
        """
        from vpr_seq_ros.models.onnx_export import INPUT_NAME, OUTPUT_NAME, onnx_session

        self._card = card
        self._batch_size = batch_size
        self._session = onnx_session(card.onnx_path, device, num_threads)
        self._input = INPUT_NAME
        self._output = OUTPUT_NAME
        self.seqgem_p = float(card.seqgem_p)

    @property
    def dim(self) -> int:
        return int(self._card.descriptor_dim)

    def settings(self) -> dict[str, Any]:
        card = self._card
        return jist_settings(card.input_height, card.input_width, card.weights_sha256,
                             card.random_init, card.untrained_head)

    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Encode images; see :meth:`JistTorchEncoder.encode`."""
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        row = 0
        for chunk in _chunks(inputs, self._batch_size):
            x = np.ascontiguousarray(
                preprocess_batch(chunk, self._card.input_height, self._card.input_width))
            out[row:row + len(chunk)] = self._session.run([self._output], {self._input: x})[0]
            row += len(chunk)
        return out


def build_jist_encoder(cfg: EncoderConfig, num_threads: int | None = None) -> FrameEncoder:
    """Build the ``jist-r18`` encoder of a configuration.

    Args:
        cfg: ``weights`` (a checkpoint for ``runtime: torch``, a model card ``.yaml`` for
            ``runtime: onnx``), ``random_init``, ``runtime``, ``device``, ``fp16``,
            ``batch_size``, ``input_height`` and ``input_width``.
        num_threads: intra-op threads of the runtime; None leaves its default.

    Raises:
        ModelError: no weights and no ``random_init``; weights missing, unreadable or not
            fitting; a card of another input size.
        ConfigError: a device or precision this machine or runtime cannot serve.
    """
    weights = cfg.weights
    is_card = weights is not None and str(weights).endswith(('.yaml', '.yml'))
    if cfg.runtime == 'onnx':
        from vpr_seq_ros.models.onnx_export import read_model_card

        if weights is None:
            raise ModelError('jist-r18 with --runtime onnx needs --weights MODEL.yaml, the model '
                             'card written by vpr-seq export-onnx (also for random weights: '
                             'export with --random-init first); see models/README.md')
        if not is_card:
            raise ModelError(f'--runtime onnx takes the model card .yaml written by vpr-seq '
                             f'export-onnx, not {weights}')
        if cfg.fp16:
            raise ConfigError('encoder.fp16 is for the torch runtime on CUDA only')
        card = read_model_card(weights)
        if card.encoder != NAME:
            raise ModelError(f'model card {weights} is for encoder {card.encoder}, not {NAME}')
        if (card.input_height, card.input_width) != (cfg.input_height, cfg.input_width):
            raise ModelError(
                f'model card {weights} was exported for {card.input_height}x{card.input_width} '
                f'input, the configuration asks for {cfg.input_height}x{cfg.input_width}; set '
                'encoder.input_height/input_width to match or re-export with --input-size')
        encoder: FrameEncoder = JistOnnxEncoder(card, cfg.device, cfg.batch_size, num_threads)
    else:
        from vpr_seq_ros.models.checkpoints import load_jist

        if is_card:
            raise ModelError(f'{weights} is an ONNX model card; use it with --runtime onnx, or '
                             'pass the torch checkpoint')
        loaded = load_jist(weights, cfg.random_init)
        encoder = JistTorchEncoder(loaded, cfg.input_height, cfg.input_width, cfg.device,
                                   cfg.fp16, cfg.batch_size, num_threads=num_threads)
    _LOG.info('jist-r18 encoder (%s runtime): %s', cfg.runtime, encoder.settings())
    return encoder
