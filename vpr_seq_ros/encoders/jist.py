"""The ``jist-r18`` frame encoder: JIST's ResNet-18 / 512 CosPlace descriptor, torch or onnx.

Images ``(H, W, 3)`` uint8 RGB of any size are resized like the official code
(:mod:`vpr_seq_ros.preprocess`) and encoded to ``(B, 512)`` float32 unit-norm descriptors; the
learnt SeqGeM exponent is exposed as :attr:`seqgem_p` for the matcher.

Runtimes and precisions (see :mod:`vpr_seq_ros.encoders.precision`):

- ``torch``: eval mode, ``torch.inference_mode()``, channels-last memory format (faster on the
  CPU with oneDNN and on CUDA); fp32, bf16 autocast (CPU or CUDA) or fp16 autocast (CUDA).
  ``cfg.weights`` is a checkpoint in one of the layouts of :class:`JistPlugin`.
- ``onnx``: onnxruntime (:mod:`vpr_seq_ros.encoders.onnx`); fp32, or int8 when the card was
  exported with it. ``cfg.weights`` is the model card ``.yaml`` written by
  ``vpr-seq export-onnx``. This path never imports torch.

Both runtimes report the same :meth:`settings` for the same weights (the card records the
checkpoint's SHA-256), so a map built with one can be queried with the other.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders.base import EncoderPlugin, ExportModel, FrameEncoder, Support
from vpr_seq_ros.errors import ConfigError, ModelError
from vpr_seq_ros.preprocess import preprocess_batch

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.encoders.precision import Capabilities
    from vpr_seq_ros.models.checkpoints import LoadedJist

_LOG = logging.getLogger(__name__)

NAME = 'jist-r18'
DIM = 512

LAYOUT_JIST = 'jist'
LAYOUT_COSPLACE = 'cosplace'
LAYOUT_TORCHVISION = 'torchvision-resnet18'


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
                 device: str = 'cpu', precision: str = 'fp32', batch_size: int = 16,
                 channels_last: bool = True, num_threads: int | None = None) -> None:
        """Wrap a loaded network.

        Args:
            loaded: the network and its provenance (:func:`~vpr_seq_ros.models.load_jist`).
            input_height: model input height in pixels.
            input_width: model input width in pixels.
            device: ``cpu``, ``cuda`` or ``auto`` (CUDA if available).
            precision: ``fp32``, ``bf16`` (autocast, CPU or CUDA) or ``fp16`` (autocast,
                CUDA only). No parity check here: see
                :func:`~vpr_seq_ros.encoders.precision.build_at_precision`.
            batch_size: frames per forward pass.
            channels_last: run in the channels-last memory format.
            num_threads: torch intra-op threads (process-wide); None leaves torch's default.

        Raises:
            ConfigError: CUDA asked for but unavailable, fp16 without CUDA, or another
                precision.
        """
        import torch

        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        if device == 'cuda' and not torch.cuda.is_available():
            raise ConfigError('encoder.device = cuda, but torch sees no CUDA device; set the '
                              'device to cpu or auto')
        if precision not in ('fp32', 'bf16', 'fp16'):
            raise ConfigError(f'the torch runtime runs fp32, bf16 and fp16, not {precision}; '
                              'int8 runs on the onnx runtime (export with precision int8)')
        if precision == 'fp16' and device != 'cuda':
            raise ConfigError('encoder.precision fp16 needs a CUDA device; on the CPU use fp32, '
                              'bf16 or auto')
        if num_threads:
            torch.set_num_threads(int(num_threads))
        self._torch = torch
        self._loaded = loaded
        self._height = input_height
        self._width = input_width
        self._device = torch.device(device)
        self.precision = precision
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
        return {**jist_settings(self._height, self._width, self._loaded.weights_sha256,
                                self._loaded.random_init, self._loaded.untrained_head),
                **self.precision_settings()}

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
            if self.precision == 'fp32':
                autocast: Any = contextlib.nullcontext()
            else:
                dtype = torch.bfloat16 if self.precision == 'bf16' else torch.float16
                autocast = torch.autocast(self._device.type, dtype=dtype)
            with torch.inference_mode(), autocast:
                descriptors = self.net(x)
            out[row:row + len(chunk)] = descriptors.float().cpu().numpy()
            row += len(chunk)
        return out


def build_jist_encoder(cfg: EncoderConfig, num_threads: int | None = None,
                       precision: str | None = None) -> FrameEncoder:
    """Build the ``jist-r18`` encoder of a configuration at one precision (no parity gate).

    Args:
        cfg: ``weights`` (a checkpoint for ``runtime: torch``, a model card ``.yaml`` for
            ``runtime: onnx``), ``random_init``, ``runtime``, ``device``, ``batch_size``,
            ``input_height`` and ``input_width``.
        num_threads: intra-op threads of the runtime; None leaves its default.
        precision: a concrete precision; None takes ``cfg.precision`` (``auto`` is fp32).

    Raises:
        ModelError: no weights and no ``random_init``; weights missing, unreadable or not
            fitting; a card of another input size.
        ConfigError: a device or precision this machine or runtime cannot serve.
    """
    if precision is None:
        precision = 'fp32' if cfg.precision == 'auto' else cfg.precision
    plugin = JistPlugin()
    weights = cfg.weights
    is_card = weights is not None and str(weights).endswith(('.yaml', '.yml'))
    if cfg.runtime == 'onnx':
        encoder = plugin.build_onnx(cfg, precision, num_threads)
    else:
        from vpr_seq_ros.models.checkpoints import load_jist

        if is_card:
            raise ModelError(f'{weights} is an ONNX model card; use it with the onnx runtime, '
                             'or pass the torch checkpoint')
        loaded = load_jist(weights, cfg.random_init)
        encoder = JistTorchEncoder(loaded, cfg.input_height, cfg.input_width, cfg.device,
                                   precision, cfg.batch_size, num_threads=num_threads)
    _LOG.info('jist-r18 encoder (%s runtime): %s', cfg.runtime, encoder.settings())
    return encoder


class JistPlugin(EncoderPlugin):
    """``jist-r18``: torch or onnx runtime; fp32, bf16, fp16 (CUDA), int8 (onnx); exportable.

    Checkpoint layouts (a DataParallel ``module.`` segment is dropped first):

    - ``jist``: the official JIST state_dict (``JIST_r18_512_seqgem.pth``; 124 keys
      ``model.backbone...``, ``model.aggregation...``, ``seq_gem.p``), also inside JIST's
      training dict under ``model_state_dict``;
    - ``cosplace``: CosPlace's ``ResNet18_512_cosplace.pth`` (the same keys without ``model.``
      and without ``seq_gem.p``; SeqGeM p stays 3);
    - ``torchvision-resnet18``: a torchvision ImageNet ``resnet18`` state_dict (``fc.*``
      ignored); only the trunk is learnt, the head is reported as untrained;
    - this project's ``jist-r18`` checkpoints.
    """

    name = NAME
    precisions = ('fp32', 'bf16', 'fp16', 'int8')
    checkpoint_kind = NAME
    checkpoint_layouts = (LAYOUT_JIST, LAYOUT_COSPLACE, LAYOUT_TORCHVISION)
    exportable = True

    def detect_layout(self, keys: Sequence[str]) -> str | None:
        if 'seq_gem.p' in keys or any(k.startswith(('model.backbone.', 'model.aggregation.'))
                                      for k in keys):
            return LAYOUT_JIST
        if any(k.startswith(('backbone.', 'aggregation.')) for k in keys):
            return LAYOUT_COSPLACE
        if 'conv1.weight' in keys or any(k.startswith('layer1.') for k in keys):
            return LAYOUT_TORCHVISION
        return None

    def build(self, cfg: EncoderConfig, precision: str = 'fp32',
              num_threads: int | None = None) -> FrameEncoder:
        return build_jist_encoder(cfg, num_threads, precision)

    def precision_support(self, cfg: EncoderConfig, caps: Capabilities) -> dict[str, Support]:
        device = cfg.device if cfg.device != 'auto' else ('cuda' if caps.cuda else 'cpu')
        if cfg.runtime == 'onnx':
            return {
                'bf16': Support(False, False, 'bf16 runs on the torch runtime'),
                'fp16': Support(False, False, 'fp16 runs on the torch runtime on CUDA'),
                'int8': self._int8_support(cfg, caps),
            }
        if device == 'cuda':
            bf16 = Support(True, caps.cuda_bf16, 'CUDA device ' + (
                'with bf16' if caps.cuda_bf16 else 'without native bf16'))
            fp16 = Support(True, True, 'CUDA device')
        else:
            bf16 = Support(True, caps.cpu_bf16, (
                'CPU with avx512_bf16/amx_bf16 and oneDNN bf16' if caps.cpu_bf16 else
                'this CPU lacks avx512_bf16/amx_bf16 (or oneDNN does not use them): bf16 is '
                'emulated'))
            fp16 = Support(False, False, 'fp16 needs a CUDA device')
        int8 = Support(False, False, 'int8 runs on the onnx runtime (export with precision '
                       'int8, then use the model card)')
        return {'bf16': bf16, 'fp16': fp16, 'int8': int8}

    @staticmethod
    def _int8_support(cfg: EncoderConfig, caps: Capabilities) -> Support:
        from vpr_seq_ros.models.onnx_export import read_model_card

        if cfg.weights is None or not str(cfg.weights).endswith(('.yaml', '.yml')):
            return Support(False, False, 'int8 needs a model card')
        try:
            has_int8 = read_model_card(cfg.weights).int8_onnx_file is not None
        except ModelError as err:
            return Support(False, False, str(err))
        if not has_int8:
            return Support(False, False, f'model card {cfg.weights} has no int8 model')
        kernels = 'VNNI/AMX int8 kernels' if caps.cpu_vnni else 'AVX2 int8 kernels (no VNNI)'
        return Support(True, True, f'quantised model on onnxruntime, {kernels}')

    def export_model(self, cfg: EncoderConfig) -> ExportModel:
        from vpr_seq_ros.models.checkpoints import load_jist

        if cfg.weights is not None and str(cfg.weights).endswith(('.yaml', '.yml')):
            raise ConfigError(f'{cfg.weights} is a model card; export needs the torch '
                              'checkpoint it was made from')
        loaded = load_jist(cfg.weights, cfg.random_init)
        net = loaded.net.float().cpu().eval()
        return ExportModel(net=net, dim=DIM, weights_sha256=loaded.weights_sha256,
                           weights_layout=loaded.layout, random_init=loaded.random_init,
                           untrained_head=loaded.untrained_head,
                           seqgem_p=float(net.seq_gem.p.item()))
