"""Shared fixtures: tiny seeded runs written into tmp_path."""

from __future__ import annotations

import csv
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


def place_image(place: float, rng: np.random.Generator, noise: float = 10.0,
                size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A smooth seeded texture whose content is a function of the place (metres)."""
    h, w = size
    xs = np.linspace(0, 1, w)[None, :, None]
    ys = np.linspace(0, 1, h)[:, None, None]
    phase = np.array([1.0, 2.0, 3.0])[None, None, :]
    base = 127 + 60 * np.sin(7 * xs + 0.9 * place * phase) * np.cos(5 * ys + 0.37 * place)
    base = base + 40 * np.sin(13 * ys * xs + place)
    img = base + rng.normal(scale=noise, size=base.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_run(folder: Path, places: np.ndarray, seed: int, with_table: bool = True,
              segments: np.ndarray | None = None, noise: float = 10.0) -> Path:
    """Write one image per place (metres along a straight line) and a frames.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i, place in enumerate(places):
        name = f'img_{i:04d}.png'
        Image.fromarray(place_image(float(place), rng, noise)).save(folder / name)
        rows.append({'name': name, 'stamp_ns': 1_000_000_000 + i * 100_000_000,
                     'x': float(place), 'y': 0.0,
                     'segment': int(segments[i]) if segments is not None else 0})
    if with_table:
        with open(folder / 'frames.csv', 'w', newline='') as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return folder


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A reference run (1 m spacing) and a noisier query run of the same route."""
    ref = write_run(tmp_path / 'ref', np.arange(0.0, 40.0, 1.0), seed=1)
    query = write_run(tmp_path / 'query', np.arange(3.0, 33.0, 1.0), seed=2, noise=25.0)
    return ref, query


@pytest.fixture
def shared_data() -> Path:
    """The shared real datasets; the test is skipped when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip('../shared/data is not present')
    return SHARED_DATA


# ------------------------------------------------------------------ real ROS 2 runs
# The ROS tests (in-process rclpy, ros2 launch, launch_testing) skip without a sourced ROS 2.
# With VPR_REQUIRE_ROS=1 (CI with ../shared/ros2) a skipped ROS test fails the run instead, and
# the summary lists which ROS tests ran. Every run talks in a ROS domain of its own.
ROS_TEST_PREFIXES = ('test_ros_', 'test_launch_', 'test_fuzz_ros')

if 'ROS_DOMAIN_ID' not in os.environ:
    os.environ['ROS_DOMAIN_ID'] = str(random.Random(os.getpid() ^ time.time_ns()).randrange(
        102, 215))


def load_benchmark(name: str) -> Any:
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / 'benchmarks' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'bench_{name}', path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _is_ros_test(nodeid: str) -> bool:
    return Path(nodeid.split('::')[0]).name.startswith(ROS_TEST_PREFIXES)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    outcomes: dict[str, list[str]] = {}
    for outcome in ('passed', 'failed', 'skipped', 'error'):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, 'nodeid', '')
            if _is_ros_test(nodeid) and getattr(report, 'when', 'call') in ('call', 'setup',
                                                                              'collect'):
                if outcome == 'passed' and report.when != 'call':
                    continue
                outcomes.setdefault(outcome, []).append(nodeid)
    if not outcomes:
        return
    terminalreporter.section('ROS 2 tests')
    terminalreporter.write_line(
        f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID")}, '
        f'ROS_DISTRO={os.environ.get("ROS_DISTRO", "(none sourced)")}, '
        f'RMW_IMPLEMENTATION={os.environ.get("RMW_IMPLEMENTATION", "(default)")}')
    for outcome, ids in outcomes.items():
        terminalreporter.write_line(f'{outcome}: {len(ids)}')
        for nodeid in ids:
            terminalreporter.write_line(f'  {outcome.upper():8s}{nodeid}')


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if os.environ.get('VPR_REQUIRE_ROS') != '1':
        return
    reporter = session.config.pluginmanager.get_plugin('terminalreporter')
    skipped = [r.nodeid for r in (reporter.stats.get('skipped', []) if reporter else [])
               if _is_ros_test(r.nodeid)]
    if skipped:
        if reporter:
            reporter.write_line(f'VPR_REQUIRE_ROS=1 but {len(skipped)} ROS tests were skipped: '
                                'is ROS 2 sourced?', red=True)
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _package_logs_reach_caplog() -> None:
    """Importing ROS 2's ``launch`` (the launch_testing pytest plugin does, at start-up) makes
    every logger created afterwards stop propagating to the root logger, where ``caplog``
    listens; the package's loggers propagate again here."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith('vpr_seq_ros') and isinstance(logger, logging.Logger):
            logger.propagate = True
