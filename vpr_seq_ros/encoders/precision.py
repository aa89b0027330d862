"""Numeric precision of learnt encoders: capability detection, the parity gate, ``auto``.

``encoder.precision`` is ``fp32``, ``bf16``, ``fp16``, ``int8`` or ``auto``:

- ``bf16``: torch autocast to bfloat16 with channels-last tensors (oneDNN). Fast only where the
  CPU has ``avx512_bf16`` or ``amx_bf16`` (and torch's oneDNN reports bf16 support), or on a
  CUDA device with bf16; elsewhere it runs emulated (slower than fp32; a warning says so).
- ``fp16``: torch autocast to float16 on a CUDA device only.
- ``int8``: the statically quantised ONNX model that ``export-onnx`` writes next to the fp32 one
  (calibrated on frames of the user's own run), on onnxruntime.
- ``auto``: of the paths with a fast implementation here, the fastest whose parity holds, timed
  against fp32 on the calibration frames; fp32 when there is none. What was picked and why is
  logged.

**Parity gate** (:func:`check_parity`): before a reduced precision is used, its descriptors of
the calibration frames are compared with fp32 ones: the cosine of every frame's two descriptors
must be >= 0.999 (the minimum is reported), and every frame's nearest other calibration frame
(Euclidean) must be the same. A path that fails is refused, naming the failed check.
Calibration frames are ``encoder.calibration_frames`` frames evenly spread over
``encoder.calibration_run`` (an image folder or bag of the user's run), or seeded synthetic images.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from vpr_seq_ros.errors import ConfigError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import EncoderConfig
    from vpr_seq_ros.encoders.base import EncoderPlugin, FrameEncoder

_LOG = logging.getLogger(__name__)

REDUCED = ('bf16', 'fp16', 'int8')
"""Reduced precisions, each admitted only through the parity gate."""

MIN_COSINE = 0.999
"""Smallest descriptor cosine to fp32 a reduced precision may have on any calibration frame."""

CPU_FLAGS_SHOWN = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'avx_vnni', 'amx_tile',
                   'amx_bf16', 'amx_int8')
"""The CPU flags that decide the fast paths (printed by benchmarks, logged by ``auto``)."""


def cpu_flags(cpuinfo: str | Path = '/proc/cpuinfo') -> frozenset[str]:
    """The CPU feature flags of the first processor in ``/proc/cpuinfo`` (empty if unreadable)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(':')
        if key.strip() in ('flags', 'Features'):
            return frozenset(value.split())
    return frozenset()


@dataclass(frozen=True)
class Capabilities:
    """What this machine offers the precision paths (detected at run time; tests build their
    own).

    Attributes:
        cpu_flags: CPU feature flags.
        onednn_bf16: torch's oneDNN reports native bf16 support on this CPU.
        cuda: torch sees a CUDA device.
        cuda_bf16: that device supports bf16.
    """

    cpu_flags: frozenset[str] = frozenset()
    onednn_bf16: bool = False
    cuda: bool = False
    cuda_bf16: bool = False

    @property
    def cpu_bf16(self) -> bool:
        """The CPU has a native bf16 path (AVX-512 BF16 or AMX, and oneDNN uses it)."""
        has_flag = bool({'avx512_bf16', 'amx_bf16'} & self.cpu_flags)
        return has_flag and self.onednn_bf16

    @property
    def cpu_vnni(self) -> bool:
        """The CPU has int8 dot-product instructions (VNNI or AMX-INT8)."""
        return bool({'avx512_vnni', 'avx_vnni', 'amx_int8'} & self.cpu_flags)

    def describe(self) -> str:
        """The deciding flags, e.g. ``avx2 avx512_bf16 amx_bf16; oneDNN bf16: yes; CUDA: no``."""
        flags = ' '.join(f for f in CPU_FLAGS_SHOWN if f in self.cpu_flags) or 'none of ' + \
            '/'.join(CPU_FLAGS_SHOWN)
        cuda = ('yes (bf16)' if self.cuda_bf16 else 'yes') if self.cuda else 'no'
        return (f'CPU flags: {flags}; oneDNN bf16: {"yes" if self.onednn_bf16 else "no"}; '
                f'CUDA: {cuda}')


def detect_capabilities(cpuinfo: str | Path = '/proc/cpuinfo',
                        probe_torch: bool = True) -> Capabilities:
    """Detect the capabilities of this machine.

    Args:
        cpuinfo: the ``/proc/cpuinfo`` to read.
        probe_torch: ask torch (if installed) about oneDNN bf16 and CUDA; False keeps torch
            unimported (the onnx runtime never needs it).
    """
    onednn_bf16 = cuda = cuda_bf16 = False
    torch: Any = None
    if probe_torch:
        try:
            import torch
        except ImportError:  # the onnx runtime needs no torch
            torch = None
    if torch is not None:
        try:
            onednn_bf16 = bool(torch.backends.mkldnn.is_available()
                               and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # older or unusual torch builds
            onednn_bf16 = False
        cuda = bool(torch.cuda.is_available())
        cuda_bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    return Capabilities(cpu_flags(cpuinfo), onednn_bf16, cuda, cuda_bf16)


@dataclass(frozen=True)
class ParityReport:
    """A reduced precision against fp32 on the calibration frames.

    Attributes:
        precision: the reduced precision.
        frames: number of calibration frames.
        min_cosine: smallest cosine between a frame's fp32 and reduced descriptors.
        max_abs_diff: largest absolute difference of any descriptor component.
        top1_mismatches: frames whose nearest other frame differs from fp32's.
        min_cosine_required: the cosine threshold.
    """

    precision: str
    frames: int
    min_cosine: float
    max_abs_diff: float
    top1_mismatches: int
    min_cosine_required: float = MIN_COSINE

    @property
    def cosine_ok(self) -> bool:
        """Every frame's cosine reaches the threshold."""
        return self.min_cosine >= self.min_cosine_required

    @property
    def top1_ok(self) -> bool:
        """Every frame has the same nearest other frame as under fp32."""
        return self.top1_mismatches == 0

    @property
    def passed(self) -> bool:
        """Both checks hold."""
        return self.cosine_ok and self.top1_ok

    def failures(self) -> list[str]:
        """The failed checks, in words."""
        out = []
        if not self.cosine_ok:
            out.append(f'descriptor cosine to fp32 is {self.min_cosine:.5f} on the worst frame, '
                       f'below {self.min_cosine_required}')
        if not self.top1_ok:
            out.append(f'{self.top1_mismatches} of {self.frames} calibration frames have '
                       'another top-1 match than under fp32')
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (recorded in the encoder settings and model cards)."""
        return {'frames': self.frames, 'min_cosine': round(self.min_cosine, 6),
                'max_abs_diff': float(f'{self.max_abs_diff:.3e}'),
                'top1_mismatches': self.top1_mismatches}

    @classmethod
    def from_dict(cls, precision: str, data: dict[str, Any]) -> ParityReport:
        """The report recorded by :meth:`as_dict` (e.g. in a model card)."""
        return cls(precision, int(data['frames']), float(data['min_cosine']),
                   float(data['max_abs_diff']), int(data['top1_mismatches']))

    def raise_if_failed(self) -> None:
        """Refuse a failed path.

        Raises:
            ModelError: naming the failed check(s).
        """
        if not self.passed:
            raise ModelError(
                f'encoder precision {self.precision} failed its parity check against fp32 on '
                f'{self.frames} calibration frames: {"; ".join(self.failures())} (min cosine '
                f'{self.min_cosine:.5f}, max abs difference {self.max_abs_diff:.2e}). Use '
                'precision fp32 (or auto, which falls back to it); if the calibration frames '
                'are not from your own run, give them (encoder.calibration_run)')


def nearest_other(descriptors: np.ndarray) -> np.ndarray:
    """``(N, D)`` -> ``(N,)`` index of each row's nearest other row (Euclidean)."""
    d = descriptors.astype(np.float64)
    sq = (d * d).sum(axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * d @ d.T
    np.fill_diagonal(dist, np.inf)
    return dist.argmin(axis=1)


def check_parity(reference: np.ndarray, candidate: np.ndarray, precision: str,
                 min_cosine: float | None = None) -> ParityReport:
    """Compare a reduced precision's descriptors with fp32 ones of the same frames.

    Args:
        reference: ``(N, D)`` fp32 descriptors.
        candidate: ``(N, D)`` descriptors at ``precision``.
        precision: the reduced precision (for the report).
        min_cosine: the cosine threshold; None: :data:`MIN_COSINE`.

    Raises:
        ModelError: fewer than 3 frames (top-1 among 2 frames says nothing) or different shapes.
    """
    if reference.shape != candidate.shape:
        raise ModelError(f'parity check: fp32 descriptors {reference.shape} and {precision} '
                         f'descriptors {candidate.shape} differ in shape')
    if reference.shape[0] < 3:
        raise ModelError(f'the parity check needs at least 3 calibration frames, got '
                         f'{reference.shape[0]}; give a longer calibration run '
                         '(encoder.calibration_run) or more encoder.calibration_frames')
    if min_cosine is None:
        min_cosine = MIN_COSINE
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    cosine = (ref * cand).sum(axis=1) / np.maximum(norms, 1e-12)
    mismatches = int((nearest_other(ref) != nearest_other(cand)).sum())
    return ParityReport(precision, int(ref.shape[0]), float(cosine.min()),
                        float(np.abs(ref - cand).max()), mismatches, min_cosine)


def synthetic_frames(count: int, height: int = 240, width: int = 320,
                     seed: int = 0) -> list[np.ndarray]:
    """Seeded calibration images ``(height, width, 3)`` uint8: distinct ramps plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(count):
        phase = rng.uniform(0, 2 * np.pi, size=3)
        image = np.empty((height, width, 3), dtype=np.float32)
        for c in range(3):
            image[..., c] = 127 + 100 * np.sin(xx / (5 + 4 * i + c) + yy / (9 + 3 * c) + phase[c])
        image += rng.normal(0, 20, size=image.shape)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


def calibration_frames(cfg: EncoderConfig) -> tuple[list[np.ndarray], str]:
    """The calibration frames of a configuration and where they come from.

    Returns:
        (``cfg.calibration_frames`` frames evenly spread over ``cfg.calibration_run``, or seeded
        synthetic images; a description of the source for logs and cards).

    Raises:
        SourceError: the calibration source cannot be read or has no images.
        ConfigError: it holds descriptors, not images.
    """
    count = cfg.calibration_frames
    if cfg.calibration_run and not Path(cfg.calibration_run).exists():
        # e.g. a map's configuration naming its calibration run, queried on another machine
        _LOG.warning('encoder.calibration_run %s does not exist; the parity gate uses seeded '
                     'synthetic images instead', cfg.calibration_run)
    if not cfg.calibration_run or not Path(cfg.calibration_run).exists():
        return synthetic_frames(count), f'{count} seeded synthetic images'
    from vpr_seq_ros.config import SourceConfig
    from vpr_seq_ros.sources import open_source

    source = open_source(cfg.calibration_run, SourceConfig())
    if source.input_kind != 'image':
        raise ConfigError(f'encoder.calibration_run {cfg.calibration_run} holds descriptors; '
                          'give an image folder or bag of your own run')
    # Spread over the run: neighbouring frames are near-duplicates, whose top-1 order says
    # nothing about the descriptors.
    total = len(source)
    wanted = set(np.linspace(0, max(total - 1, 0), min(count, total)).round().astype(int))
    frames = []
    for index, frame in enumerate(source):
        if index in wanted and frame.image is not None:
            frames.append(frame.image)
        if index >= max(wanted, default=0):
            break
    return frames, f'{len(frames)} frames spread over {cfg.calibration_run}'


def _timed_encode(encoder: FrameEncoder, frames: Sequence[np.ndarray]) -> tuple[float, np.ndarray]:
    """(seconds per frame of a second, warm run; descriptors)."""
    encoder.encode(frames[:1])  # warm-up (lazy allocations, kernel selection)
    started = time.perf_counter()
    out = encoder.encode(frames)
    return (time.perf_counter() - started) / len(frames), out


def build_at_precision(plugin: EncoderPlugin, cfg: EncoderConfig,
                       caps: Capabilities | None = None,
                       frames: Sequence[np.ndarray] | None = None,
                       num_threads: int | None = None) -> FrameEncoder:
    """Build ``plugin``'s encoder at ``cfg.precision``, through the parity gate when reduced.

    Args:
        plugin: the encoder's plugin.
        cfg: the encoder configuration.
        caps: this machine's capabilities (detected when None; tests pass their own).
        frames: calibration frames (from ``cfg`` when None).
        num_threads: intra-op threads of the runtime.

    Raises:
        ConfigError: a precision the encoder does not have, or cannot run here (why is named).
        ModelError: the requested reduced precision failed its parity check.
    """
    requested = cfg.precision
    if requested not in ('fp32', 'auto') and requested not in plugin.precisions:
        runs = ('in fp32 only' if plugin.precisions == ('fp32',) else
                'in ' + ', '.join(plugin.precisions))
        raise ConfigError(f'encoder {plugin.name} runs {runs}, not {requested}; set '
                          'encoder.precision to one of those (or auto)')
    if requested == 'fp32' or plugin.precisions == ('fp32',):
        return plugin.build(cfg, 'fp32', num_threads)
    if caps is None:
        caps = detect_capabilities(probe_torch=cfg.runtime != 'onnx')
    support = plugin.precision_support(cfg, caps)
    fp32_cfg = dataclasses.replace(cfg, precision='fp32')
    if requested != 'auto':
        state = support[requested]
        if not state.runnable:
            raise ConfigError(f'encoder.precision = {requested} is not available for '
                              f'{plugin.name}: {state.why}; use fp32 or auto')
        if not state.native:
            _LOG.warning('encoder.precision = %s runs without a fast path here (%s); it may be '
                         'slower than fp32', requested, state.why)
        candidate = plugin.build(cfg, requested, num_threads)
        if candidate.parity is not None and frames is None and not cfg.calibration_run:
            # Gated at export on the user's frames (an int8 model card): trust that record.
            candidate.parity.raise_if_failed()
            _LOG.info('%s at %s: parity recorded at export: min cosine %.5f, top-1 identical',
                      plugin.name, requested, candidate.parity.min_cosine)
            return candidate
        if frames is None:
            frames, origin = calibration_frames(cfg)
        else:
            origin = f'{len(frames)} given frames'
        reference = plugin.build(fp32_cfg, 'fp32', num_threads).encode(frames)
        report = check_parity(reference, candidate.encode(frames), requested)
        report.raise_if_failed()
        candidate.parity = report
        _LOG.info('%s at %s: parity with fp32 on %s: min cosine %.5f, top-1 identical',
                  plugin.name, requested, origin, report.min_cosine)
        return candidate
    return _auto(plugin, cfg, fp32_cfg, caps, support, frames, num_threads)


def _auto(plugin: EncoderPlugin, cfg: EncoderConfig, fp32_cfg: EncoderConfig,
          caps: Capabilities, support: dict[str, Any], frames: Sequence[np.ndarray] | None,
          num_threads: int | None) -> FrameEncoder:
    tried = [p for p in REDUCED if p in support and support[p].runnable and support[p].native]
    skipped = '; '.join(f'{p}: {s.why}' for p, s in support.items() if p not in tried)
    reference = plugin.build(fp32_cfg, 'fp32', num_threads)
    if not tried:
        _LOG.info('encoder.precision auto for %s: fp32, no faster path here (%s; %s)',
                  plugin.name, skipped or 'none implemented', caps.describe())
        return reference
    if frames is None:
        frames, _ = calibration_frames(cfg)
    ref_s, ref_out = _timed_encode(reference, frames)
    best, best_s, notes = reference, ref_s, [f'fp32 {1000 * ref_s:.1f} ms/frame']
    for precision in tried:
        try:
            candidate = plugin.build(dataclasses.replace(cfg, precision=precision), precision,
                                     num_threads)
            seconds, out = _timed_encode(candidate, frames)
        except (ConfigError, ModelError) as err:
            notes.append(f'{precision} unavailable ({err})')
            continue
        if candidate.parity is not None and not cfg.calibration_run:
            report = candidate.parity  # recorded at export, on the user's frames
        else:
            report = check_parity(ref_out, out, precision)
        if not report.passed:
            notes.append(f'{precision} {1000 * seconds:.1f} ms/frame refused '
                         f'({"; ".join(report.failures())})')
            continue
        notes.append(f'{precision} {1000 * seconds:.1f} ms/frame, min cosine '
                     f'{report.min_cosine:.5f}')
        candidate.parity = report
        if seconds < best_s:
            best, best_s = candidate, seconds
    _LOG.info('encoder.precision auto for %s: picked %s (%s; %s%s)', plugin.name,
              best.precision, ', '.join(notes), caps.describe(),
              f'; not tried: {skipped}' if skipped else '')
    return best


__all__ = ['Capabilities', 'MIN_COSINE', 'ParityReport', 'REDUCED', 'build_at_precision',
           'calibration_frames', 'check_parity', 'cpu_flags', 'detect_capabilities',
           'nearest_other', 'synthetic_frames']
