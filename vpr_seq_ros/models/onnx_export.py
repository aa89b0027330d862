"""ONNX export of any exportable frame encoder, its model card, and the onnxruntime settings.

Which encoders export, and what they export, is their plugin's business
(:meth:`~vpr_seq_ros.encoders.base.EncoderPlugin.export_model`); this module traces, checks and
writes. The exported graph is the whole frame encoder **including its input normalisation**:

- input ``images``: ``(batch, 3, H, W)`` **uint8** RGB in 0..255, NCHW, already resized to the
  card's ``input_height x input_width`` (the plugin's ``preprocess``); the batch axis is
  dynamic, H and W are fixed;
- inside, for ``jist-r18``: ``x / 255``, ImageNet mean/std, ResNet-18 trunk, L2Norm, GeM,
  Linear, L2Norm;
- output ``descriptors``: ``(batch, D)`` float32.

With ``precision: int8`` a statically quantised copy (``<name>.int8.onnx``, QDQ format,
convolutions with int8 weights, per channel or per tensor, whichever agrees better with fp32,
and uint8 activations) is written next to the fp32 graph, calibrated on frames of
``encoder.calibration_run`` (the user's own run), and admitted only if it passes the parity gate of
:mod:`vpr_seq_ros.encoders.precision` against the fp32 graph on those frames.

SeqGeM is not in the jist graph (it runs on descriptors, in the matcher); its learnt ``p`` is
recorded in the card. The model card ``<name>.yaml`` next to ``<name>.onnx`` records what made
the graph, including the SHA-256 of the source checkpoint, so maps built with the torch and the
onnx runtimes carry the same encoder settings. This module imports torch only inside
:func:`export_onnx`; reading a card and running the graph need onnxruntime alone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from vpr_seq_ros.encoders.base import file_sha256
from vpr_seq_ros.errors import ConfigError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime

    from vpr_seq_ros.config import EncoderConfig

_LOG = logging.getLogger(__name__)

CARD_FORMAT = 'vpr_seq_ros.onnx_card'
CARD_VERSION = 1
INPUT_NAME = 'images'
OUTPUT_NAME = 'descriptors'
INPUT_DTYPE = 'uint8'
PARITY_TOLERANCE = 1e-4
PARITY_IMAGES = 3
INT8_OPS = ('Conv',)
"""Operators quantised to int8: the convolutions (nearly all the compute). The head (GeM,
Linear, normalisations) stays in float: quantising its output costs descriptor accuracy and
saves almost no time."""


@dataclass(frozen=True)
class ModelCard:
    """What an exported ONNX frame encoder is (the ``.yaml`` next to the ``.onnx``).

    Attributes:
        path: the card file.
        onnx_file: the ONNX file name, relative to the card's folder.
        onnx_sha256: SHA-256 of the ONNX file (checked on load).
        encoder: encoder name (a registered exportable encoder, e.g. ``jist-r18``).
        input_height: fixed input height in pixels.
        input_width: fixed input width in pixels.
        descriptor_dim: output dimension D.
        weights_sha256: SHA-256 of the source checkpoint, or None for random weights.
        weights_layout: layout of the source checkpoint (``jist``, ``cosplace``, ...).
        random_init: made from seeded random weights.
        untrained_head: the head was not learnt (torchvision trunk).
        seqgem_p: the learnt SeqGeM exponent, or None for an encoder without one.
        opset: ONNX opset.
        parity_max_abs_diff: max |onnxruntime - torch| over the export-time parity images.
        int8_onnx_file: the quantised ONNX file next to the card, or None.
        int8_onnx_sha256: its SHA-256.
        int8_parity: the int8 graph against the fp32 graph on the calibration frames
            (``frames``, ``min_cosine``, ``max_abs_diff``, ``top1_mismatches``,
            ``calibration``: where the frames came from).
    """

    path: Path
    onnx_file: str
    onnx_sha256: str
    encoder: str
    input_height: int
    input_width: int
    descriptor_dim: int
    weights_sha256: str | None
    weights_layout: str
    random_init: bool
    untrained_head: bool
    seqgem_p: float | None
    opset: int
    parity_max_abs_diff: float
    int8_onnx_file: str | None = None
    int8_onnx_sha256: str | None = None
    int8_parity: dict[str, Any] | None = None

    @property
    def onnx_path(self) -> Path:
        """The ONNX file."""
        return self.path.parent / self.onnx_file

    @property
    def int8_onnx_path(self) -> Path | None:
        """The quantised ONNX file, or None."""
        return None if self.int8_onnx_file is None else self.path.parent / self.int8_onnx_file

    def to_yaml_dict(self) -> dict[str, Any]:
        """The card's YAML content."""
        fields = asdict(self)
        fields.pop('path')
        return {'format': CARD_FORMAT, 'version': CARD_VERSION, **fields,
                'input_name': INPUT_NAME, 'input_dtype': INPUT_DTYPE, 'input_range': [0, 255],
                'input_layout': 'NCHW RGB, dynamic batch, fixed height and width',
                'normalisation': 'in the graph: x / 255, then ImageNet mean/std',
                'output_name': OUTPUT_NAME}


def read_model_card(path: str | Path) -> ModelCard:
    """Read and check a model card, including the SHA-256 of the ONNX file it names.

    Raises:
        ModelError: missing or malformed card, missing or modified ONNX file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f'model card {path} does not exist; write one with vpr-seq export-onnx '
                         '(see models/README.md)')
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ModelError(f'cannot read model card {path}: {err}') from err
    if not isinstance(data, dict) or data.get('format') != CARD_FORMAT:
        raise ModelError(f'{path} is not a {CARD_FORMAT} model card; pass the .yaml written by '
                         'vpr-seq export-onnx')
    if data.get('version') != CARD_VERSION:
        raise ModelError(f'model card {path} has version {data.get("version")!r}; this '
                         f'vpr_seq_ros reads version {CARD_VERSION}: re-export the model')
    fields = dataclasses.fields(ModelCard)
    names = [f.name for f in fields if f.name != 'path']
    required = [f.name for f in fields
                if f.name != 'path' and f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in data]
    if missing:
        raise ModelError(f'model card {path} lacks {", ".join(missing)}; re-export the model')
    try:
        card = ModelCard(path=path, **{n: data[n] for n in names if n in data})
    except TypeError as err:  # pragma: no cover - all fields are given above
        raise ModelError(f'model card {path} is malformed: {err}') from err
    files = [(card.onnx_path, card.onnx_sha256)]
    if card.int8_onnx_path is not None:
        files.append((card.int8_onnx_path, str(card.int8_onnx_sha256)))
    for onnx_path, sha256 in files:
        if not onnx_path.is_file():
            raise ModelError(f'model card {path} names {onnx_path.name}, which is not next to '
                             'it; keep the .onnx files and their .yaml together')
        actual = file_sha256(onnx_path)
        if actual != sha256:
            raise ModelError(f'{onnx_path} does not match its model card {path} (sha256 '
                             f'{actual[:12]}, card says {sha256[:12]}); re-export the model')
    return card


def onnx_session(onnx_path: str | Path, device: str = 'cpu',
                 num_threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime session with the settings the product uses.

    Full graph optimisation (constant folding, conv/BN/activation fusion, layout
    transformation to the blocked NCHWc format of the CPU kernels), sequential execution, one
    inter-op thread. Intra-op threads default to onnxruntime's choice (the physical cores).

    Args:
        onnx_path: the ONNX file.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA if onnxruntime has it, else CPU).
        num_threads: intra-op threads; None leaves onnxruntime's default.

    Raises:
        ConfigError: ``cuda`` asked for but onnxruntime has no CUDA provider.
        ModelError: the file cannot be loaded.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    has_cuda = 'CUDAExecutionProvider' in available
    if device == 'cuda' and not has_cuda:
        raise ConfigError('encoder.device = cuda, but this onnxruntime has no CUDA provider '
                          '(install onnxruntime-gpu); use --device cpu or auto')
    providers = ['CPUExecutionProvider']
    if device in ('cuda', 'auto') and has_cuda:
        providers.insert(0, 'CUDAExecutionProvider')
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    try:
        return ort.InferenceSession(str(onnx_path), options, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ModelError(f'onnxruntime cannot load {onnx_path}: {err}; re-export the '
                         'model') from err


def parity_images(height: int, width: int, count: int = PARITY_IMAGES) -> np.ndarray:
    """Seeded test images: ``(count, 3, height, width)`` uint8 (smooth ramps plus noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((count, 3, height, width), dtype=np.uint8)
    for i in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        for c in range(3):
            ramp = 127 + 100 * np.sin(xx / (7 + 5 * i + c) + yy / (11 + 3 * c) + phase[c])
            noise = rng.normal(0, 20, size=(height, width))
            out[i, c] = np.clip(ramp + noise, 0, 255).astype(np.uint8)
    return out


def _tmp_name(path: Path) -> Path:
    """A temporary name next to ``path``, for an atomic write with ``os.replace``."""
    return path.with_name(f'.{path.name}.tmp-{os.getpid()}')


def export_onnx(encoder_cfg: EncoderConfig, out_path: str | Path,
                input_height: int | None = None, input_width: int | None = None,
                opset: int = 17) -> Path:
    """Export a frame encoder to ONNX, check it against torch, and write its model card.

    Args:
        encoder_cfg: the encoder (any registered exportable one) and its weights (a checkpoint
            path, or ``random_init``); ``precision: int8`` also writes the statically
            quantised graph, calibrated on ``calibration_run`` (required then). Runtime and
            device are ignored (export runs on the CPU).
        out_path: the ``.onnx`` file to write; the card goes to the same name with ``.yaml``.
        input_height: fixed input height; default ``encoder_cfg.input_height``.
        input_width: fixed input width; default ``encoder_cfg.input_width``.
        opset: ONNX opset version.

    Returns:
        The model card path (what the encoder's weights are with the onnx runtime).

    Raises:
        ConfigError: an encoder that cannot be exported, a bad output name or size, a precision
            other than fp32/int8, int8 without calibration frames.
        ModelError: the weights do not load, the export fails, onnxruntime and torch differ by
            more than 1e-4, or the int8 graph fails its parity check (nothing is written then).
    """
    from vpr_seq_ros.encoders.registry import encoder_names, get_encoder_plugin

    plugin = get_encoder_plugin(encoder_cfg.name)
    if not plugin.exportable:
        exportable = [n for n in encoder_names() if get_encoder_plugin(n).exportable]
        raise ConfigError(f'encoder {encoder_cfg.name!r} cannot be exported to ONNX; '
                          f'exportable: {", ".join(exportable)}')
    if encoder_cfg.transform.name != 'none':
        raise ConfigError('export-onnx exports the frame encoder only; leave the transform out '
                          '(it runs after the encoder, on descriptors)')
    precision = encoder_cfg.precision
    if precision not in ('fp32', 'int8'):
        raise ConfigError(f'export writes fp32 and optionally int8 graphs, not {precision}; '
                          'bf16 and fp16 run on the torch runtime')
    if precision == 'int8' and not encoder_cfg.calibration_run:
        raise ConfigError('int8 export needs calibration frames of your own run: set '
                          'encoder.calibration_run to an image folder or bag')
    if precision == 'int8' and not Path(str(encoder_cfg.calibration_run)).exists():
        raise ConfigError(f'the calibration run {encoder_cfg.calibration_run} does not exist; '
                          'give an image folder or bag of your own run')
    out_path = Path(out_path)
    if out_path.suffix != '.onnx':
        raise ConfigError(f'the output file must end in .onnx, got {out_path}')
    height = input_height or encoder_cfg.input_height
    width = input_width or encoder_cfg.input_width
    if height < 32 or width < 32:
        raise ConfigError(f'input size {height}x{width} is too small: the encoder needs at '
                          'least 32x32 pixels')
    model = plugin.export_model(encoder_cfg)
    net = model.net
    out_path.parent.mkdir(parents=True, exist_ok=True)
    card_path = out_path.with_suffix('.yaml')
    int8_path = out_path.with_suffix('.int8.onnx')
    tmp = _tmp_name(out_path)
    tmp_int8 = _tmp_name(int8_path)
    int8_fields: dict[str, Any] = {}
    try:
        _trace_to_onnx(net, tmp, height, width, opset)
        parity = _parity(net, tmp, height, width)
        if not parity <= PARITY_TOLERANCE:
            raise ModelError(f'onnxruntime and torch disagree after export: max abs descriptor '
                             f'difference {parity:.2e} > {PARITY_TOLERANCE:.0e}; try another '
                             'opset or onnxruntime version')
        if precision == 'int8':
            int8_fields = _quantise_int8(plugin, encoder_cfg, tmp, tmp_int8, height, width)
            int8_fields['int8_onnx_file'] = int8_path.name
            os.replace(tmp_int8, int8_path)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_int8.unlink(missing_ok=True)
    card = ModelCard(
        path=card_path, onnx_file=out_path.name, onnx_sha256=file_sha256(out_path),
        encoder=encoder_cfg.name, input_height=height, input_width=width,
        descriptor_dim=model.dim, weights_sha256=model.weights_sha256,
        weights_layout=model.weights_layout, random_init=model.random_init,
        untrained_head=model.untrained_head, seqgem_p=model.seqgem_p,
        opset=opset, parity_max_abs_diff=parity, **int8_fields)
    tmp = _tmp_name(card_path)
    try:
        tmp.write_text(yaml.safe_dump(card.to_yaml_dict(), sort_keys=False))
        os.replace(tmp, card_path)
    finally:
        tmp.unlink(missing_ok=True)
    _LOG.info('exported %s (%dx%d, opset %d, parity %.2e%s) with card %s', out_path, height,
              width, opset, parity, ', with int8' if int8_fields else '', card_path)
    return card_path


def _quantise_int8(plugin: Any, cfg: EncoderConfig, fp32_path: Path, out: Path, height: int,
                   width: int) -> dict[str, Any]:
    """Statically quantise ``fp32_path`` into ``out`` and gate it; returns the card fields.

    Raises:
        ModelError: quantisation fails, or the parity check against fp32 fails.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quant_pre_process, quantize_static)

    from vpr_seq_ros.encoders.precision import calibration_frames, check_parity

    frames, origin = calibration_frames(cfg)
    batches = [plugin.preprocess([frame], height, width) for frame in frames]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {INPUT_NAME: batch}

    images = np.concatenate(batches)
    reference = onnx_session(fp32_path, 'cpu').run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    prepared = out.with_name(out.name + '.pre.onnx')
    candidate = out.with_name(out.name + '.try.onnx')
    best: tuple[Any, bool] | None = None
    try:
        # Shape inference and graph optimisation first (folds the batch norms into the
        # convolutions' initialisers), as onnxruntime recommends before static quantisation.
        quant_pre_process(str(fp32_path), str(prepared))
        # Per-channel weight scales are usually the more accurate, but not always (a seeded
        # toy network lost 0.3 % cosine with them and 0.005 % without): keep the better.
        for per_channel in (True, False):
            quantize_static(str(prepared), str(candidate), _Reader(),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(INT8_OPS),
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            quantised = onnx_session(candidate, 'cpu').run([OUTPUT_NAME],
                                                           {INPUT_NAME: images})[0]
            report = check_parity(reference, quantised, 'int8')
            _LOG.info('int8 (per-channel %s): min cosine %.5f, top-1 mismatches %d',
                      per_channel, report.min_cosine, report.top1_mismatches)
            if best is None or (report.passed, report.min_cosine) > (best[0].passed,
                                                                     best[0].min_cosine):
                best = (report, per_channel)
                os.replace(candidate, out)
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 - the quantiser raises many types
        raise ModelError(f'int8 quantisation failed: {err}') from err
    finally:
        prepared.unlink(missing_ok=True)
        candidate.unlink(missing_ok=True)
    assert best is not None
    report, per_channel = best
    report.raise_if_failed()
    _LOG.info('int8 graph: min cosine %.5f to fp32 on %s, top-1 identical', report.min_cosine,
              origin)
    return {'int8_onnx_sha256': file_sha256(out),
            'int8_parity': {**report.as_dict(), 'calibration': origin,
                            'per_channel': per_channel}}


def _trace_to_onnx(net: Any, path: Path, height: int, width: int, opset: int) -> None:
    """Trace ``net`` on uint8 images into an ONNX file (dynamic batch, fixed H and W)."""
    import torch

    dummy = torch.from_numpy(parity_images(height, width, 2))
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but the dynamo exporter needs onnxscript,
        # which is not a dependency; the legacy one is exact for this network.
        warnings.simplefilter('ignore', DeprecationWarning)
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        try:
            torch.onnx.export(
                net, (dummy,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}},
                do_constant_folding=True)
        except Exception as err:  # noqa: BLE001 - the exporter raises many types
            raise ModelError(f'ONNX export failed (opset {opset}): {err}') from err


def _parity(net: Any, onnx_path: Path, height: int, width: int) -> float:
    """Max abs difference of descriptors between eager torch and onnxruntime."""
    import torch

    images = parity_images(height, width)
    with torch.inference_mode():
        expected = net(torch.from_numpy(images)).numpy()
    session = onnx_session(onnx_path, 'cpu')
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    return float(np.abs(actual - expected).max())
