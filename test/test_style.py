"""Lint: the package, tests, benchmarks and launch files pass ruff (ament-like settings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    pytest.importorskip('ruff')
    done = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', 'vpr_seq_ros',
                           'test', 'benchmarks', 'launch'], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
