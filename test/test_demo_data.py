"""Tests of the procedural two-condition demo route (``vpr_seq_ros.demo_data``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpr_seq_ros.demo_data import RouteSpec, generate_route
from vpr_seq_ros.encoders.patchnorm import PatchNormEncoder

SPEC = RouteSpec(length_m=60.0)
HEADER = ['name', 'stamp_ns', 'x', 'y', 'z', 'yaw']


def _read_csv(folder: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(folder / 'frames.csv', newline='', encoding='utf-8') as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _positions(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(r['x']), float(r['y'])] for r in rows])


def _images(folder: Path, rows: list[dict[str, str]]) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / r['name'])) for r in rows]


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope='module')
def route(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_route(tmp_path_factory.mktemp('route'), SPEC)


@pytest.fixture(scope='module')
def runs(route: tuple[Path, Path]) -> dict[str, tuple[list[dict[str, str]], list[np.ndarray]]]:
    out = {}
    for key, folder in zip(('reference', 'query'), route):
        _, rows = _read_csv(folder)
        out[key] = (rows, _images(folder, rows))
    return out


def test_returns_reference_and_query_folders(route: tuple[Path, Path]) -> None:
    ref_dir, query_dir = route
    assert ref_dir.name == 'reference' and query_dir.name == 'query'
    assert ref_dir.parent == query_dir.parent
    assert ref_dir.is_dir() and query_dir.is_dir()


@pytest.mark.parametrize('which', [0, 1])
def test_layout_and_csv_match_images(route: tuple[Path, Path], which: int) -> None:
    folder = route[which]
    header, rows = _read_csv(folder)
    assert header == HEADER
    pngs = sorted(p.name for p in folder.glob('*.png'))
    assert pngs == [f'frame_{i:05d}.png' for i in range(len(pngs))]
    assert [r['name'] for r in rows] == pngs
    assert len(rows) >= 10
    for name in pngs[:3] + pngs[-3:]:
        with Image.open(folder / name) as image:
            assert image.mode == 'RGB'
            assert image.size == (SPEC.image_width, SPEC.image_height)
    assert {p.name for p in folder.iterdir()} == set(pngs) | {'frames.csv'}


@pytest.mark.parametrize('which', [0, 1])
def test_stamps_are_increasing_integers_at_the_rate(route: tuple[Path, Path],
                                                     which: int) -> None:
    _, rows = _read_csv(route[which])
    raw = [r['stamp_ns'] for r in rows]
    assert all(s.isdigit() for s in raw)
    stamps = np.array([int(s) for s in raw], dtype=np.int64)
    assert np.all(np.diff(stamps) > 0)
    expected = [round(i * 1e9 / SPEC.rate_hz) for i in range(len(stamps))]
    assert (stamps - stamps[0]).tolist() == expected


def test_poses_share_one_frame(runs: dict) -> None:
    ref_rows, _ = runs['reference']
    query_rows, _ = runs['query']
    for rows in (ref_rows, query_rows):
        assert all(float(r['z']) == 0.0 for r in rows)
        assert all(np.isfinite(float(r['yaw'])) for r in rows)
    ref = _positions(ref_rows)
    query = _positions(query_rows)
    # Reference frames are one spacing apart along the route, the query moves faster.
    ref_steps = np.linalg.norm(np.diff(ref, axis=0), axis=1)
    np.testing.assert_allclose(ref_steps, SPEC.reference_spacing_m, rtol=0.02)
    query_steps = np.linalg.norm(np.diff(query, axis=0), axis=1)
    np.testing.assert_allclose(
        query_steps, SPEC.reference_spacing_m * SPEC.query_speed_factor, rtol=0.02)
    # Every query position lies within the reference route's extent and has a true match.
    low, high = ref.min(axis=0) - 1.0, ref.max(axis=0) + 1.0
    assert np.all((query >= low) & (query <= high))
    gaps = np.linalg.norm(query[:, None] - ref[None], axis=2)
    assert gaps.min(axis=1).max() < 1.5
    # The query starts after the reference start and ends before its end.
    nearest = gaps.argmin(axis=1)
    assert nearest[0] > 0 and nearest[-1] < len(ref) - 1
    assert np.all(np.diff(nearest) > 0)


def test_same_seed_is_byte_identical_other_seed_differs(route: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    again = generate_route(tmp_path / 'again', SPEC)
    for first, second in zip(route, again):
        assert _folder_bytes(first) == _folder_bytes(second)
    other = generate_route(tmp_path / 'other', RouteSpec(length_m=SPEC.length_m, seed=1))
    for first, second in zip(route, other):
        a = np.asarray(Image.open(first / 'frame_00005.png'), dtype=np.int16)
        b = np.asarray(Image.open(second / 'frame_00005.png'), dtype=np.int16)
        assert np.abs(a - b).mean() > 5.0
        assert (first / 'frames.csv').read_bytes() != (second / 'frames.csv').read_bytes()


def test_rewriting_removes_stale_frames(tmp_path: Path) -> None:
    generate_route(tmp_path, RouteSpec(length_m=20.0))
    ref_dir, query_dir = generate_route(tmp_path, RouteSpec(length_m=10.0))
    for folder in (ref_dir, query_dir):
        _, rows = _read_csv(folder)
        assert len(list(folder.glob('*.png'))) == len(rows)


def test_adjacent_frames_overlap_like_a_moving_camera(runs: dict) -> None:
    _, images = runs['reference']
    # The upper half of the image sees the facades, which slide left as the camera moves on.
    stack = np.stack(images).astype(np.float32)[:, :SPEC.image_height // 2]
    width = SPEC.image_width
    residual = [np.abs(stack[:-1, :, dx:] - stack[1:, :, :width - dx]).mean()
                for dx in range(width // 4)]
    best = int(np.argmin(residual))
    assert 5 <= best <= 30
    assert residual[best] < 0.25 * residual[0]
    assert residual[0] < np.abs(stack[10:] - stack[:-10]).mean()


def test_query_condition_differs_but_matches_its_place(runs: dict) -> None:
    ref_rows, ref_images = runs['reference']
    query_rows, query_images = runs['query']
    ref = _positions(ref_rows)
    query = _positions(query_rows)
    gaps = np.linalg.norm(query[:, None] - ref[None], axis=2)
    true = gaps.argmin(axis=1)
    # The condition change exists: darker, and clearly different pixels at the same place.
    ref_same = np.stack([ref_images[i] for i in true]).astype(np.float32)
    query_stack = np.stack(query_images).astype(np.float32)
    assert query_stack.mean() < 0.85 * ref_same.mean()
    assert np.abs(query_stack - ref_same).mean() > 10.0
    # Yet descriptors are closer to the true place than to a far place, on average.
    encoder = PatchNormEncoder()
    ref_desc = encoder.encode(ref_images)
    query_desc = encoder.encode(query_images)
    dist = np.linalg.norm(query_desc[:, None] - ref_desc[None], axis=2)
    rows = np.arange(len(query))
    far = np.where(gaps >= 20.0, dist, np.nan)
    assert np.all(np.isfinite(np.nanmean(far, axis=1)))
    assert dist[rows, true].mean() < 0.9 * np.nanmean(far)
    # Matching single frames by descriptor finds the true place (within 3 m) at better than chance.
    single = dist.argmin(axis=1)
    recall = float(np.mean(gaps[rows, single] <= 3.0))
    assert recall > 0.2


@pytest.mark.parametrize('kwargs', [
    {'length_m': 0.0},
    {'reference_spacing_m': -1.0},
    {'query_speed_factor': 0.0},
    {'rate_hz': 0.0},
    {'image_width': 8},
    {'length_m': 2.0},
])
def test_invalid_spec_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RouteSpec(**kwargs)
