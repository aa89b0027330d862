"""The RTAB-Map adapter's rclpy shell: ``mapData`` in, ``add_link`` calls out. Nothing else.

Imported by the node only when ``node.rtabmap.enabled`` is true, so ``rtabmap_msgs`` is never
needed otherwise. Stamp -> node id matching, link building and the information matrix live in
:mod:`vpr_seq_ros.runtime.rtabmap` (tested without ROS).
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

from rclpy.node import Node
from rclpy.qos import QoSProfile

from vpr_seq_ros.config import Config
from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.runtime.rtabmap import LinkValues, RtabmapLinker


def import_rtabmap_msgs() -> tuple[Any, Any]:
    """``(MapData, AddLink)`` of ``rtabmap_msgs``.

    Raises:
        ConfigError: the package cannot be imported (says how to fix it).
    """
    try:
        from rtabmap_msgs.msg import MapData
        from rtabmap_msgs.srv import AddLink
    except ImportError as err:
        raise ConfigError(
            f'node.rtabmap.enabled is true but rtabmap_msgs cannot be imported ({err}): install '
            'RTAB-Map\'s messages (e.g. the ros-<distro>-rtabmap-msgs package) and source its '
            'setup file before starting the node, or set node.rtabmap.enabled to false') \
            from err
    return MapData, AddLink


class RtabmapAdapter:
    """Sends verified loop closures to RTAB-Map's ``add_link`` service.

    Counters go to ``diagnostics`` (the node core's ``Diagnostics.extra``) as ``rtabmap.*``:
    ``nodes`` (stamps known), ``built``, ``sent``, ``acknowledged``, ``failed`` (the call
    raised), ``service_unavailable``, ``pending`` and one per skip reason.

    Args:
        node: the rclpy node that owns the subscription and the client.
        cfg: the node's configuration (``node.rtabmap``; slam mode and verification needed).
        diagnostics: the dict the counters are written to.
        lock: the lock that guards ``diagnostics``.

    Raises:
        ConfigError: rtabmap_msgs missing, or a configuration the adapter cannot serve.
    """

    def __init__(self, node: Node, cfg: Config, diagnostics: dict[str, float],
                 lock: threading.Lock) -> None:
        map_data, self.add_link = self.check(cfg)
        self.cfg = cfg.node.rtabmap
        self.node = node
        self.linker = RtabmapLinker(self.cfg)
        self.diagnostics = diagnostics
        self.lock = lock  # guards the linker and the counters
        self.counts = {'sent': 0, 'acknowledged': 0, 'failed': 0, 'service_unavailable': 0}
        self.client = node.create_client(self.add_link, self.cfg.add_link_service)
        self.subscription = node.create_subscription(map_data, self.cfg.map_data_topic,
                                                     self._on_map_data, QoSProfile(depth=10))
        with self.lock:
            self._update_diagnostics()
        node.get_logger().info(
            f'RTAB-Map adapter: node ids from {self.subscription.topic_name}, verified loop '
            f'closures to {self.client.srv_name}')

    @staticmethod
    def check(cfg: Config) -> tuple[Any, Any]:
        """What the adapter needs, checked at start-up: ``(MapData, AddLink)``.

        Raises:
            ConfigError: not slam mode, verification off, or rtabmap_msgs missing.
        """
        if cfg.node.mode != 'slam':
            raise ConfigError('node.rtabmap.enabled needs node.mode slam (loop closures); set '
                              'node.rtabmap.enabled to false in localization mode')
        if not cfg.node.verification.enabled:
            raise ConfigError('node.rtabmap.enabled needs node.verification.enabled: RTAB-Map '
                              'links need the verified relative pose and its covariance')
        return import_rtabmap_msgs()

    def _update_diagnostics(self) -> None:
        self.diagnostics['rtabmap.nodes'] = float(len(self.linker.table))
        for key, value in {**self.linker.counts, **self.counts}.items():
            self.diagnostics[f'rtabmap.{key}'] = float(value)

    def _on_map_data(self, msg: Any) -> None:
        nodes = [(n.id, n.stamp) for n in msg.nodes]
        with self.lock:
            ready = self.linker.add_nodes(nodes)
            self._update_diagnostics()
        self._send(ready)

    def on_closures(self, closures: Iterable[Any]) -> None:
        """Verified loop closures of one step (called from the node's worker thread)."""
        with self.lock:
            ready = self.linker.add_closures(closures)
            self._update_diagnostics()
        self._send(ready)

    def request(self, link: LinkValues) -> Any:
        """The ``AddLink`` request of a link."""
        req = self.add_link.Request()
        msg = req.link
        msg.from_id, msg.to_id, msg.type = link.from_id, link.to_id, link.type
        t, q = msg.transform.translation, msg.transform.rotation
        t.x, t.y, t.z = link.translation
        q.x, q.y, q.z, q.w = link.rotation
        msg.information = [float(v) for v in link.information]
        return req

    def _send(self, links: list[LinkValues]) -> None:
        for link in links:
            if not self.client.service_is_ready():
                with self.lock:
                    self.counts['service_unavailable'] += 1
                    self._update_diagnostics()
                self.node.get_logger().warning(
                    f'RTAB-Map link {link.from_id} -> {link.to_id} not sent: no '
                    f'{self.client.srv_name} service (is rtabmap running in SLAM mode, and '
                    'is node.rtabmap.add_link_service its name?)', throttle_duration_sec=10.0)
                continue
            future = self.client.call_async(self.request(link))
            future.add_done_callback(lambda f, link=link: self._done(f, link))
            with self.lock:
                self.counts['sent'] += 1
                self._update_diagnostics()
            self.node.get_logger().info(
                f'RTAB-Map link {link.from_id} -> {link.to_id} sent (stamps '
                f'{link.query_stamp_ns * 1e-9:.3f} s -> {link.match_stamp_ns * 1e-9:.3f} s)')

    def _done(self, future: Any, link: LinkValues) -> None:
        error = future.exception()
        with self.lock:
            self.counts['failed' if error is not None else 'acknowledged'] += 1
            self._update_diagnostics()
        if error is not None:
            self.node.get_logger().error(
                f'RTAB-Map add_link {link.from_id} -> {link.to_id} failed: {error}')


__all__ = ['RtabmapAdapter', 'import_rtabmap_msgs']
