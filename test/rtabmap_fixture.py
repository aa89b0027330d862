"""Build the test fixture ``rtabmap_msgs`` (test/fixtures/rtabmap_msgs) with plain cmake.

The fixture package holds the part of RTAB-Map's ``rtabmap_msgs`` that the RTAB-Map adapter uses
(``Link``, ``MapGraph``, ``MapData``, ``Node`` and the messages ``Node`` holds, ``AddLink``),
field for field as in rtabmap_ros (branch ros2). colcon is not needed: ``cmake`` configures it
against the sourced ROS 2 (``AMENT_PREFIX_PATH``/``CMAKE_PREFIX_PATH``) and ``make install``
installs it into a cache folder keyed by the fixture's files, the ROS tree, the Python ABI and
numpy's major version, so it is built once per machine (``XDG_CACHE_HOME`` or ``~/.cache``,
``vpr_seq_ros/``). The libraries get an RPATH to that folder, so putting its
``site-packages`` on ``sys.path`` is all a running Python needs to import the messages.

Nothing here imports ROS.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / 'test' / 'fixtures' / 'rtabmap_msgs'
BUILD_TIMEOUT_S = 1200


class Unavailable(Exception):
    """What the build needs is missing here (the message says what)."""


class BuildFailed(Exception):
    """The build ran and failed (the message holds the log's tail and its path)."""


def _ros_prefixes() -> list[str]:
    return [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]


def missing() -> str | None:
    """Why the fixture cannot be built here, or None when everything it needs is present."""
    if not any((Path(p) / 'share' / 'rosidl_default_generators').is_dir()
               for p in _ros_prefixes()):
        return 'no ROS 2 with rosidl_default_generators is sourced (AMENT_PREFIX_PATH)'
    for tool in ('cmake', 'make', 'cc', 'c++'):
        if shutil.which(tool) is None:
            return f'{tool} is not installed'
    for module, package in (('em', 'empy'), ('catkin_pkg', 'catkin-pkg'), ('lark', 'lark')):
        if importlib.util.find_spec(module) is None:
            return (f'the Python module {module} (pip package {package}), which the rosidl '
                    f'code generators import, is not installed in {sys.executable}')
    return None


def cache_prefix() -> Path:
    """The install prefix of this fixture, ROS tree and Python."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob('*')):
        if path.is_file():
            digest.update(str(path.relative_to(SOURCE)).encode())
            digest.update(path.read_bytes())
    digest.update(os.pathsep.join(_ros_prefixes()).encode())
    # what the built extension depends on; not the interpreter's path, which changes with
    # each fresh clone's virtual environment
    numpy_spec = importlib.util.find_spec('numpy')
    numpy_version = ''
    if numpy_spec is not None:
        import numpy

        numpy_version = numpy.__version__.split('.')[0]
    digest.update(f'{sysconfig.get_config_var("SOABI")} numpy {numpy_version}'.encode())
    root = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache') / 'vpr_seq_ros'
    return root / f'rtabmap_msgs-{digest.hexdigest()[:16]}'


def site_packages(prefix: Path) -> Path:
    """Where the fixture's Python package is installed under ``prefix``."""
    found = sorted(prefix.glob('lib/python3*/site-packages'))
    if not found:
        raise BuildFailed(f'no lib/python3*/site-packages under {prefix}')
    return found[0]


def build(log: Path | None = None) -> tuple[Path, float]:
    """Build and install the fixture unless the cache holds it.

    Returns:
        The install prefix, and the build's wall time in seconds (0 when cached).

    Raises:
        Unavailable: cmake, a compiler, a sourced ROS 2 or a generator's Python module is
            missing.
        BuildFailed: the build failed.
    """
    reason = missing()
    if reason:
        raise Unavailable(reason)
    prefix = cache_prefix()
    done = prefix / '.complete'
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with open(prefix.with_name(prefix.name + '.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be building the same
        if done.exists():
            return prefix, 0.0
        shutil.rmtree(prefix, ignore_errors=True)
        work = prefix.with_name(prefix.name + '.build')
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        log = log or work / 'build.log'
        start = time.monotonic()
        jobs = str(max(1, min(os.cpu_count() or 1, 4)))
        steps = [
            ['cmake', str(SOURCE), f'-DCMAKE_INSTALL_PREFIX={prefix}',
             '-DCMAKE_BUILD_TYPE=Release', '-DBUILD_TESTING=OFF',
             f'-DCMAKE_INSTALL_RPATH={prefix / "lib"}', f'-DPython3_EXECUTABLE={sys.executable}'],
            ['make', f'-j{jobs}', 'install'],
        ]
        env = dict(os.environ)
        env.setdefault('CMAKE_PREFIX_PATH', os.pathsep.join(_ros_prefixes()))
        with open(log, 'w') as out:
            for cmd in steps:
                try:
                    code = subprocess.run(cmd, cwd=work, env=env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          timeout=BUILD_TIMEOUT_S).returncode
                except subprocess.TimeoutExpired:
                    code = -1
                if code != 0:
                    out.flush()
                    tail = ''.join(log.read_text(errors='replace').splitlines(True)[-30:])
                    shutil.rmtree(prefix, ignore_errors=True)
                    raise BuildFailed(f'{" ".join(cmd[:2])} failed (exit {code}); log '
                                      f'{log}:\n{tail}')
        elapsed = time.monotonic() - start
        site_packages(prefix)
        (prefix / 'build_seconds').write_text(f'{elapsed:.1f}\n')
        done.write_text('')
        shutil.rmtree(work, ignore_errors=True)
        return prefix, elapsed


def activate(prefix: Path) -> None:
    """Make the built messages importable in this process (and findable by ament)."""
    path = str(site_packages(prefix))
    if path not in sys.path:
        sys.path.insert(0, path)
    prefixes = _ros_prefixes()
    if str(prefix) not in prefixes:
        os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join([str(prefix), *prefixes])


if __name__ == '__main__':  # python test/rtabmap_fixture.py: build (or find) it, print where
    built, seconds = build()
    print(f'{built} (built in {seconds:.0f} s)' if seconds else f'{built} (cached)')
