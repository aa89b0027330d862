"""Helpers for the tests that run the node under a real ROS 2 (``ros2 launch``, ``ros2 bag``).

Nothing here imports ROS: the tests that use it skip themselves when ROS 2 is not sourced.

The node is made findable by ``ros2 launch vpr_seq_ros ...`` without colcon: :func:`ament_prefix`
lays out what ``colcon build --symlink-install`` installs for this package (the ament index
marker, ``share/vpr_seq_ros/{launch,config}``, ``package.xml`` and ``lib/vpr_seq_ros/vpr_node``)
as links to this source tree, and the tests put it first on ``AMENT_PREFIX_PATH``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'vpr_seq_ros'


def ros_available() -> bool:
    """Whether a ROS 2 with the ``ros2`` command is sourced."""
    try:
        import launch_ros  # noqa: F401
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return shutil.which('ros2') is not None


def rclpy_context() -> Iterator[Any]:
    """A fresh rclpy context, shut down afterwards (the body of the tests' ``context``
    fixture)."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def ament_prefix(root: Path) -> Path:
    """An ament install prefix for this package at ``root``, linked to the source tree."""
    share = root / 'share' / PACKAGE
    index = root / 'share' / 'ament_index' / 'resource_index' / 'packages'
    lib = root / 'lib' / PACKAGE
    for folder in (share, index, lib):
        folder.mkdir(parents=True, exist_ok=True)
    (index / PACKAGE).write_text('')
    # files linked one by one: ros2 launch does not look into linked folders
    for source in [REPO / 'package.xml', *(REPO / 'launch').glob('*.py'),
                   *(REPO / 'config').rglob('*.yaml')]:
        target = share / source.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(source)
    node = lib / 'vpr_node'
    node.write_text(f'#!{sys.executable}\n'
                    'import sys\n'
                    f'sys.path.insert(0, {str(REPO)!r})\n'
                    'from vpr_seq_ros.ros.node import main\n'
                    'sys.exit(main())\n')
    node.chmod(0o755)
    return root


def unique_domain_id() -> int:
    """A ROS domain id for one test (0..101 and 215..232 are valid; tests use 102..214)."""
    return random.Random(os.getpid() ^ time.time_ns()).randrange(102, 215)


def ros_env(prefix: Path, domain_id: int) -> dict[str, str]:
    """The environment of a ``ros2`` child: this package first, a domain of its own."""
    env = dict(os.environ)
    env['AMENT_PREFIX_PATH'] = os.pathsep.join(
        p for p in (str(prefix), env.get('AMENT_PREFIX_PATH', '')) if p)
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH', '')) if p)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['PYTHONUNBUFFERED'] = '1'
    env['RCUTILS_COLORIZED_OUTPUT'] = '0'
    return env


class Launched:
    """A child process (``ros2 launch``, ``ros2 bag play``) whose output is collected.

    Args:
        cmd: the command line.
        env: its environment.
    """

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.cmd = cmd
        self.env = env
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        """Everything the process printed so far."""
        with self._changed:
            return ''.join(self.lines)

    def wait_for(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the output (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if any(text in line for line in self.lines):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._changed.wait(min(left, 0.2))

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C (SIGINT to the process group, as a terminal does); the exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._reader.join(timeout=5.0)
        return code

    def kill(self) -> None:
        """SIGKILL the whole process group (clean-up after a failed test)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10.0)


def image_msg(rgb: Any, stamp_ns: int) -> Any:
    """An rclpy ``sensor_msgs/Image`` (rgb8) of an ``(H, W, 3)`` uint8 array at a stamp."""
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = 'camera'
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = 'rgb8'
    msg.step = rgb.shape[1] * 3
    msg.data = rgb.tobytes()
    return msg
