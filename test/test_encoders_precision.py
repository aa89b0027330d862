"""encoder.precision: capability detection (mocked both ways), the parity gate, ``auto``, each
path against fp32 on seeded weights, and the map/query precision rule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoders_toy import NAME, registered_toy, save_toy_weights
from models_fixtures import official_jist_state_dict
from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders import build_encoder, get_encoder_plugin
from vpr_seq_ros.encoders import precision as precision_module
from vpr_seq_ros.encoders.precision import (Capabilities, build_at_precision, check_parity,
                                            cpu_flags, detect_capabilities, nearest_other,
                                            synthetic_frames)
from vpr_seq_ros.errors import ConfigError, MapError, ModelError
from vpr_seq_ros.models.onnx_export import export_onnx
from vpr_seq_ros.refmap import ReferenceMap, make_manifest
from vpr_seq_ros.types import EncodedRun

H, W = 64, 96
AMX = Capabilities(frozenset({'avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_int8'}),
                   onednn_bf16=True)
AVX2 = Capabilities(frozenset({'avx2', 'fma'}), onednn_bf16=False)
CUDA = Capabilities(frozenset({'avx2'}), cuda=True, cuda_bf16=True)


@pytest.fixture(scope='module')
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp('precision') / 'JIST_r18_512_seqgem.pth'
    torch.save(official_jist_state_dict(seed=3), path)
    return path


def _jist(weights: Path, **kw: object) -> EncoderConfig:
    return EncoderConfig(name='jist-r18', weights=str(weights), input_height=H, input_width=W,
                         **kw)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ------------------------------------------------------------------ capability detection


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nvendor_id\t: GenuineIntel\n'
                    'flags\t\t: fpu sse2 avx2 avx512_bf16 amx_bf16 amx_tile\n\n'
                    'processor\t: 1\nflags\t\t: fpu\n')
    assert cpu_flags(info) == frozenset({'fpu', 'sse2', 'avx2', 'avx512_bf16', 'amx_bf16',
                                         'amx_tile'})
    assert cpu_flags(tmp_path / 'missing') == frozenset()
    caps = detect_capabilities(info)
    assert caps.cpu_flags == cpu_flags(info)
    # bf16 is native only when the CPU has the instructions AND oneDNN uses them
    assert caps.cpu_bf16 == caps.onednn_bf16
    assert detect_capabilities().cpu_flags == cpu_flags()


def test_capabilities_mocked_both_ways() -> None:
    assert AMX.cpu_bf16 and AMX.cpu_vnni and 'amx_bf16' in AMX.describe()
    assert not AVX2.cpu_bf16 and not AVX2.cpu_vnni
    assert AVX2.describe() == 'CPU flags: avx2; oneDNN bf16: no; CUDA: no'
    assert not Capabilities(frozenset({'amx_bf16'}), onednn_bf16=False).cpu_bf16


def test_jist_precision_support_follows_the_capabilities(weights: Path) -> None:
    plugin = get_encoder_plugin('jist-r18')
    amx = plugin.precision_support(_jist(weights), AMX)
    assert amx['bf16'].runnable and amx['bf16'].native
    assert not amx['fp16'].runnable and not amx['int8'].runnable
    avx2 = plugin.precision_support(_jist(weights), AVX2)
    assert avx2['bf16'].runnable and not avx2['bf16'].native
    assert 'emulated' in avx2['bf16'].why
    cuda = plugin.precision_support(_jist(weights, device='auto'), CUDA)
    assert cuda['fp16'].runnable and cuda['fp16'].native and cuda['bf16'].native
    onnx = plugin.precision_support(_jist(weights, runtime='onnx'), AMX)
    assert not onnx['bf16'].runnable and not onnx['fp16'].runnable
    assert not onnx['int8'].runnable and 'model card' in onnx['int8'].why


# ----------------------------------------------------------------------- the parity gate


def test_parity_report_hand_computed_cases() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [0.0, 0.2, 1.0]])
    same = check_parity(ref, ref.copy(), 'bf16')
    assert same.passed and same.min_cosine == pytest.approx(1.0) and same.max_abs_diff == 0
    # nearest others: 0<->1 and 2<->3; swap row 1 towards row 2: rows 0, 1 change neighbour
    moved = ref.copy()
    moved[1] = [0.0, 0.1, 0.9]
    report = check_parity(ref, moved, 'int8')
    assert report.top1_mismatches == int((nearest_other(ref) != nearest_other(moved)).sum())
    assert report.top1_mismatches >= 1 and not report.cosine_ok
    assert report.min_cosine == pytest.approx(_cosines(ref, moved).min())
    with pytest.raises(ModelError, match='int8 failed its parity check.*cosine to fp32 is '
                       r'.*below 0\.999.*another top-1 match'):
        report.raise_if_failed()
    # a uniform scale keeps every cosine and every neighbour
    assert check_parity(ref, 3 * ref, 'bf16').passed
    # only top-1: a tiny perturbation that flips a near tie
    tie = np.array([[1.0, 0.0], [1.0, 0.01], [1.0, -0.0100001]])
    flipped = tie.copy()
    flipped[2, 1] = -0.0099999
    only_top1 = check_parity(tie, flipped, 'bf16')
    assert only_top1.cosine_ok and not only_top1.top1_ok
    with pytest.raises(ModelError, match='3 calibration frames'):
        check_parity(ref[:2], ref[:2], 'bf16')


# ------------------------------------------------------ each path against fp32, seeded weights


def test_bf16_on_the_cpu_is_gated_and_recorded(weights: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    frames = synthetic_frames(6, 90, 120)
    fp32 = build_encoder(_jist(weights))
    with caplog.at_level(logging.WARNING):
        bf16 = build_at_precision(get_encoder_plugin('jist-r18'), _jist(weights,
                                  precision='bf16'), caps=AVX2, frames=frames)
    assert 'runs without a fast path here' in caplog.text
    ref, out = fp32.encode(frames), bf16.encode(frames)
    assert _cosines(ref, out).min() >= 0.999
    np.testing.assert_array_equal(nearest_other(out), nearest_other(ref))
    settings = bf16.settings()
    assert settings['precision'] == 'bf16' and settings['parity']['frames'] == 6
    assert settings['parity']['min_cosine'] == pytest.approx(_cosines(ref, out).min(), abs=1e-6)
    assert {k: v for k, v in settings.items() if k not in ('precision', 'parity')} == {
        k: v for k, v in fp32.settings().items() if k != 'precision'}


def test_a_failing_path_is_refused_naming_the_check(weights: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision_module, 'MIN_COSINE', 1.0 + 1e-9)  # nothing can pass
    with pytest.raises(ModelError, match='bf16 failed its parity check against fp32 on 4 '
                       'calibration frames: descriptor cosine'):
        build_at_precision(get_encoder_plugin('jist-r18'), _jist(weights, precision='bf16'),
                           caps=AMX, frames=synthetic_frames(4, 60, 80))


def test_unavailable_precisions_are_config_errors(weights: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with pytest.raises(ConfigError, match='fp16 needs a CUDA device'):
        build_encoder(_jist(weights, precision='fp16'))
    with pytest.raises(ConfigError, match='int8 runs on the onnx runtime'):
        build_encoder(_jist(weights, precision='int8'))
    with pytest.raises(ConfigError, match='patchnorm runs in fp32 only, not bf16'):
        build_encoder(EncoderConfig(precision='bf16'))
    with registered_toy():
        with pytest.raises(ConfigError, match='toy-cnn runs in fp32, bf16, int8, not fp16'):
            build_encoder(EncoderConfig(name=NAME, precision='fp16'))
    assert build_encoder(EncoderConfig(precision='auto')).settings()['name'] == 'patchnorm'
    with pytest.raises(ConfigError, match='calibration_frames = 2 must be >= 3'):
        EncoderConfig(calibration_frames=2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_fp16_on_cuda_is_gated(weights: Path) -> None:  # pragma: no cover - no GPU here
    frames = synthetic_frames(6, 90, 120)
    fp16 = build_encoder(_jist(weights, device='cuda', precision='fp16'))
    ref = build_encoder(_jist(weights)).encode(frames)
    out = fp16.encode(frames)
    assert _cosines(ref, out).min() >= 0.999 and fp16.settings()['precision'] == 'fp16'
    np.testing.assert_array_equal(nearest_other(out), nearest_other(ref))


def test_int8_jist_is_admitted_only_with_parity(weights: Path, tmp_path: Path) -> None:
    """Seeded random ResNet weights map all frames within cosine ~0.995 of each other (top-1
    gaps ~1e-5, about int8's error; here it is refused on top-1): either the gate refuses and
    leaves nothing behind, or the int8 graph it admitted agrees with torch fp32 (checked here
    independently). The int8 path passing end to end is also in test_encoders_registry, on
    the toy encoder."""
    calibration = tmp_path / 'run'
    calibration.mkdir()
    for i, frame in enumerate(synthetic_frames(6, 90, 120, seed=1)):
        Image.fromarray(frame).save(calibration / f'{i:02d}.png')
    out = tmp_path / 'out'
    cfg = _jist(weights, precision='int8', calibration_run=str(calibration), calibration_frames=6)
    try:
        card = export_onnx(cfg, out / 'jist.onnx')
    except ModelError as err:
        assert 'int8 failed its parity check against fp32 on 6 calibration frames' in str(err)
        assert list(out.iterdir()) == []
    else:
        int8 = build_encoder(_jist(card, runtime='onnx', precision='int8'))
        frames = [np.asarray(Image.open(p)) for p in sorted(calibration.iterdir())]
        ref, got = build_encoder(_jist(weights)).encode(frames), int8.encode(frames)
        assert _cosines(ref, got).min() >= 0.999 and int8.settings()['precision'] == 'int8'
        np.testing.assert_array_equal(nearest_other(got), nearest_other(ref))
    with pytest.raises(ConfigError, match='int8 export needs calibration frames'):
        export_onnx(_jist(weights, precision='int8'), tmp_path / 'other.onnx')
    with pytest.raises(ConfigError, match='calibration run .*missing does not exist'):
        export_onnx(_jist(weights, precision='int8', calibration_run=str(tmp_path / 'missing')),
                    tmp_path / 'other.onnx')


def test_a_missing_calibration_run_falls_back_to_synthetic_frames(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = EncoderConfig(calibration_run=str(tmp_path / 'gone'), calibration_frames=4)
    with caplog.at_level(logging.WARNING):
        frames, origin = precision_module.calibration_frames(cfg)
    assert origin == '4 seeded synthetic images' and 'does not exist' in caplog.text
    for got, expected in zip(frames, synthetic_frames(4)):
        np.testing.assert_array_equal(got, expected)
    run = tmp_path / 'run'
    run.mkdir()
    for i, frame in enumerate(synthetic_frames(10, 30, 40, seed=2)):
        Image.fromarray(frame).save(run / f'{i:02d}.png')
    frames, origin = precision_module.calibration_frames(
        EncoderConfig(calibration_run=str(run), calibration_frames=4))
    assert origin == f'4 frames spread over {run}'
    expected = synthetic_frames(10, 30, 40, seed=2)
    for got, index in zip(frames, (0, 3, 6, 9)):
        np.testing.assert_array_equal(got, expected[index])


# --------------------------------------------------------------------------------- auto


def test_auto_picks_fp32_without_a_fast_path(weights: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        encoder = build_at_precision(get_encoder_plugin('jist-r18'),
                                     _jist(weights, precision='auto'), caps=AVX2)
    assert encoder.precision == 'fp32' and encoder.parity is None
    assert 'auto for jist-r18: fp32, no faster path here' in caplog.text
    assert 'bf16: this CPU lacks avx512_bf16/amx_bf16' in caplog.text


@pytest.mark.parametrize('bf16_faster', [True, False])
def test_auto_picks_the_faster_path_whose_parity_holds(
        bf16_faster: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real = precision_module._timed_encode

    def timed(encoder: object, frames: list[np.ndarray]) -> tuple[float, np.ndarray]:
        _, out = real(encoder, frames)  # real descriptors, scripted speed
        fast = (encoder.precision == 'bf16') == bf16_faster  # type: ignore[attr-defined]
        return (0.01 if fast else 0.02), out

    monkeypatch.setattr(precision_module, '_timed_encode', timed)
    with registered_toy():
        weights = save_toy_weights(tmp_path / 'toy.pth', seed=5)
        cfg = EncoderConfig(name=NAME, weights=str(weights), input_height=40, input_width=48,
                            precision='auto', calibration_frames=5)
        with caplog.at_level(logging.INFO):
            encoder = build_at_precision(get_encoder_plugin(NAME), cfg, caps=AMX)
    assert encoder.precision == ('bf16' if bf16_faster else 'fp32')
    assert f'picked {encoder.precision} (fp32 ' in caplog.text
    assert 'bf16 10.0 ms/frame' in caplog.text or 'bf16 20.0 ms/frame' in caplog.text
    if bf16_faster:
        assert encoder.parity is not None and encoder.parity.passed


def test_auto_on_this_machine_logs_what_and_why(weights: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        encoder = build_encoder(_jist(weights, precision='auto', calibration_frames=3))
    picked = [r.message for r in caplog.records if 'encoder.precision auto' in r.message]
    assert len(picked) == 1 and encoder.precision in picked[0]
    if not detect_capabilities().cpu_bf16:
        assert encoder.precision == 'fp32'


# -------------------------------------------------------------------- map / query rule


def test_maps_and_queries_of_different_precisions_are_compatible() -> None:
    base = {'name': 'jist-r18', 'input_height': 480, 'input_width': 640,
            'weights_sha256': 'ab' * 32, 'random_init': False, 'untrained_head': False}
    run = EncodedRun(np.zeros((3, 4), np.float32), np.arange(3, dtype=np.int64), None,
                     np.zeros(3, np.int64), ())
    refmap = ReferenceMap(run, make_manifest({**base, 'precision': 'fp32'}, 1, 'run',
                                             'float32', 3, 4))
    parity = {'frames': 16, 'min_cosine': 0.9999, 'max_abs_diff': 1e-3, 'top1_mismatches': 0}
    refmap.check_query({**base, 'precision': 'bf16', 'parity': parity})
    refmap.check_query(base)  # a map made before precision was recorded
    transformed = ReferenceMap(run, make_manifest({'name': 'jist-r18+seqmatchnet', 'base': {
        **base, 'precision': 'int8', 'parity': parity}, 'transform': {'dim': 4}}, 1, 'run',
        'float32', 3, 4))
    transformed.check_query({'name': 'jist-r18+seqmatchnet', 'base': {**base,
                             'precision': 'fp32'}, 'transform': {'dim': 4}})
    with pytest.raises(MapError, match='weights_sha256') as err:
        refmap.check_query({**base, 'weights_sha256': 'cd' * 32, 'precision': 'bf16'})
    assert 'precision' not in str(err.value)
