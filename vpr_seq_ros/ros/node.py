"""The rclpy shell: declare parameters, subscribe, publish, serve, time. Nothing else.

Everything the node decides lives in :class:`vpr_seq_ros.runtime.core.NodeCore`, messages are
decoded and built in :mod:`vpr_seq_ros.messages`, and the configuration is resolved by
:func:`vpr_seq_ros.ros.params.resolve_node_config` (all tested without ROS). Frames wait in a
bounded queue; a worker thread decodes, encodes and matches them, so the subscription callback
never blocks and the stalest frames are dropped under load. Every counter the callbacks, the
worker and the diagnostics timer share is changed under ``self.lock``.
"""

from __future__ import annotations

import contextlib
import difflib
import signal
import threading
import traceback
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vpr_seq_ros.config import Config
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.errors import ConfigError, VprSeqError
from vpr_seq_ros.messages import outputs
from vpr_seq_ros.messages.factory import generated_factory
from vpr_seq_ros.messages.intake import Intake
from vpr_seq_ros.ros.params import (DYNAMIC_PREFIXES, config_from_parameters,
                                    default_parameters, is_dynamic, parameter_description,
                                    parameter_kind, resolve_node_config)
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.runtime.queue import DroppingQueue

_KIND_TYPES = {
    'bool': ParameterType.PARAMETER_BOOL,
    'int': ParameterType.PARAMETER_INTEGER,
    'float': ParameterType.PARAMETER_DOUBLE,
    'str': ParameterType.PARAMETER_STRING,
    'float[]': ParameterType.PARAMETER_DOUBLE_ARRAY,
    'int[]': ParameterType.PARAMETER_INTEGER_ARRAY,
}

_OUTPUT_CLASSES = {
    outputs.TOPIC_MATCHED_POSE: PoseWithCovarianceStamped,
    outputs.TOPIC_PLACE_MATCHES: Float64MultiArray,
    outputs.TOPIC_LOOP_CLOSURE: Float64MultiArray,
    outputs.TOPIC_LOOP_CLOSURES: Float64MultiArray,
    outputs.TOPIC_LOOP_CLOSURE_POSE: PoseWithCovarianceStamped,
    outputs.TOPIC_MARKERS: MarkerArray,
    outputs.TOPIC_MATCH_RELATIVE_POSE: PoseWithCovarianceStamped,
}

_SHUTDOWN_ERRORS = (_rclpy.RCLError, _rclpy.InvalidHandle) if hasattr(_rclpy, 'InvalidHandle') \
    else (_rclpy.RCLError,)


class VprSeqNode(Node):
    """Sequential place recognition node: localization against a map, or loop closures."""

    def __init__(self, **node_kwargs: Any) -> None:
        """``node_kwargs`` go to :class:`rclpy.node.Node` (context, parameter_overrides, ...)."""
        super().__init__('vpr_seq_node', **node_kwargs)
        for name, text in (('preset', 'named preset of config/presets applied under the '
                                      'parameters'),
                           ('config_file', 'YAML file of the configuration schema applied '
                                           'under the parameters')):
            self.declare_parameter(name, '', ParameterDescriptor(description=text,
                                                                 read_only=True))
        self.schema_names = frozenset(default_parameters(Config()))
        given = {name: p.value for name, p in self._parameter_overrides.items()
                 if name in self.schema_names}
        cfg, refmap = resolve_node_config(given, self.get_parameter('preset').value,
                                          self.get_parameter('config_file').value)
        for name, default in default_parameters(cfg).items():
            self._declare(name, default)
        self.cfg = config_from_parameters(
            {name: self.get_parameter(name).value for name in self.schema_names}, cfg)
        self._warn_unknown_overrides()
        rtabmap: Any = None
        if self.cfg.node.rtabmap.enabled:  # rtabmap_msgs is imported only when enabled
            from vpr_seq_ros.ros.rtabmap import RtabmapAdapter as rtabmap

            rtabmap.check(self.cfg)  # before the model and map load
        # model and map load once, here; any problem is fatal now, never later
        self.core = NodeCore(self.cfg, build_encoder(self.cfg.encoder), refmap) \
            if refmap is not None else NodeCore.from_config(self.cfg)
        self.core.verify_in_background()  # loop-closure verification off the image path
        self.make = generated_factory()
        self.lock = threading.Lock()
        self.intake = Intake(self.core, lambda: self.get_clock().now().nanoseconds, self.lock)
        self.queue: DroppingQueue = DroppingQueue(self.cfg.node.queue_depth)
        self.frames_in_window = 0
        self.stop = threading.Event()
        self.add_on_set_parameters_callback(self._on_set_parameters)

        reliable = QoSProfile(depth=10)
        self.pubs = {topic: self.create_publisher(cls, topic, reliable)
                     for topic, cls in _OUTPUT_CLASSES.items()}
        self.diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', reliable)
        if self.cfg.node.image_transport == 'compressed':
            self.image_sub = self.create_subscription(
                CompressedImage, 'image/compressed', self._on_image, qos_profile_sensor_data)
        else:
            self.image_sub = self.create_subscription(Image, 'image', self._on_image,
                                                      qos_profile_sensor_data)
        self.create_subscription(Odometry, 'odom', self._on_odom, QoSProfile(depth=50))
        self.create_service(Trigger, '~/save_map', self._on_save_map)
        self.create_service(Trigger, '~/reset', self._on_reset)
        self.create_timer(1.0, self._publish_diagnostics)
        self.rtabmap = None if rtabmap is None else \
            rtabmap(self, self.cfg, self.core.diagnostics.extra, self.lock)
        self.worker = threading.Thread(target=self._work, name='vpr_seq_inference', daemon=True)
        self.worker.start()
        self.get_logger().info(
            f'ready: mode {self.cfg.node.mode}, method {self.cfg.matching.method}, '
            f'L={self.cfg.sequence.length}, map {self.core.diagnostics.map_size} frames, '
            f'images on {self.image_sub.topic_name}')

    def _warn_unknown_overrides(self) -> None:
        """rclpy ignores overrides of undeclared parameters: name them (typos in YAML)."""
        unknown = sorted(name for name in self._parameter_overrides
                         if not self.has_parameter(name) and not name.startswith('qos_overrides.'))
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(self.schema_names), n=1)
            hint = f'; did you mean {close[0]}?' if close else ''
            self.get_logger().warning(f'ignoring parameter {name}: not in the schema{hint}')

    def destroy_node(self) -> None:
        """Stop the inference worker before the publishers go away."""
        self.stop.set()
        if self.worker.is_alive() and self.worker is not threading.current_thread():
            self.worker.join(timeout=5.0)
        super().destroy_node()

    def _declare(self, name: str, default: Any) -> None:
        """Declare a schema parameter with its type, documentation and read-only flag."""
        kind = parameter_kind(name)
        try:
            self.declare_parameter(name, default, ParameterDescriptor(
                description=parameter_description(name), type=_KIND_TYPES[kind],
                read_only=not is_dynamic(name)))
        except InvalidParameterTypeException as err:
            raise ConfigError(f'parameter {name} must be of type {kind} (e.g. write 1.0, '
                              f'not 1, for a float): {err}') from err
        except InvalidParameterValueException as err:
            raise ConfigError(f'parameter {name}: {err}') from err

    def _publish(self, publisher: Any, msg: Any) -> None:
        """Publish unless the node is shutting down (then the context may already be gone)."""
        if self.stop.is_set() or not self.context.ok():
            return
        try:
            publisher.publish(msg)
        except _SHUTDOWN_ERRORS:
            if self.context.ok():
                raise

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg: Any) -> None:
        dropped = self.queue.put(msg)
        with self.lock:
            self.frames_in_window += 1
            self.core.diagnostics.frames_dropped_queue += dropped

    def _on_odom(self, msg: Odometry) -> None:
        self.intake.odometry(msg)

    def _work(self) -> None:
        """The inference thread: decode, encode, match and publish the newest frames."""
        while not self.stop.is_set() and self.context.ok():
            msg = self.queue.get(timeout=0.5)
            if msg is None or self.stop.is_set():
                continue
            step = self.intake.image(msg)  # never raises; drops are counted
            if step is None:
                continue
            with self.lock:
                cfg, query_pose = self.cfg, self.intake.last_pose
            try:
                for out in outputs.step_messages(self.make, step, cfg.node.map_frame,
                                                 cfg.node.max_distance, query_pose,
                                                 cfg.node.publish_markers,
                                                 cfg.node.verification.enabled):
                    self._publish(self.pubs[out.topic], out.msg)
                if self.rtabmap is not None and step.loop_closures:
                    self.rtabmap.on_closures(step.loop_closures)
            except Exception:  # noqa: BLE001 - the worker must outlive one bad frame
                if self.context.ok():
                    self.get_logger().error(f'publishing failed:\n{traceback.format_exc()}',
                                            throttle_duration_sec=5.0)

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        # Parameters outside the schema (use_sim_time, ...) are rclpy's own business.
        values = {p.name: p.value for p in params if p.name in self.schema_names}
        if not values:
            return SetParametersResult(successful=True)
        fixed = sorted(name for name in values if not is_dynamic(name))
        if fixed:
            dynamic = ', '.join(f'{p}*' if p.endswith('.') else p for p in DYNAMIC_PREFIXES)
            return SetParametersResult(
                successful=False, reason=f'{", ".join(fixed)} cannot change at run time '
                f'(only {dynamic} can); restart the node')
        try:
            with self.lock:
                cfg = config_from_parameters(values, self.cfg)
                self.cfg = cfg
                self.core.cfg = cfg
        except VprSeqError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _on_save_map(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        try:
            with self.lock:
                path = self.cfg.node.map_path or 'vpr_seq_map.npz'
                written = self.core.save_map(path)
            response.success, response.message = True, f'map written to {written}'
        except VprSeqError as err:
            response.success, response.message = False, str(err)
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Any:
        with self.lock:
            self.core.reset()
        response.success, response.message = True, 'sequence buffer reset'
        return response

    def _publish_diagnostics(self) -> None:
        with self.lock:
            frames_in_window, self.frames_in_window = self.frames_in_window, 0
            received = self.core.diagnostics.frames_received
            msg = outputs.diagnostics(self.make, self.core.diagnostics,
                                      self.get_clock().now().nanoseconds,
                                      f'vpr_seq_ros: {self.cfg.node.mode}',
                                      float(frames_in_window))
        if frames_in_window == 0 and received == 0:
            self.get_logger().warning(
                f'no image received yet on {self.image_sub.topic_name}: check the image topic '
                f'remapping, node.image_transport ({self.cfg.node.image_transport}) and QoS '
                '(sensor data: best effort)', throttle_duration_sec=10.0)
        self._publish(self.diag_pub, msg)


def spin(node: Node) -> None:
    """Spin ``node`` until Ctrl-C, SIGTERM or a shutdown of its context; never raises for those.

    A signal shuts the context down from rclpy's signal-handling thread while the executor may
    be building its next wait set; rclpy then raises ``RCLError: failed to initialize wait
    set: the given context is not valid`` from ``spin()`` (ros2cli tolerates the same race).
    An error of rclpy's once the context is no longer valid is therefore a shutdown.
    """
    executor = MultiThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _SHUTDOWN_ERRORS:
        if node.context.ok():
            raise
    finally:
        with contextlib.suppress(KeyboardInterrupt, *_SHUTDOWN_ERRORS):
            executor.shutdown(timeout_sec=1.0)


def _on_sigint(signum: int, frame: Any) -> None:
    """Python's part of Ctrl-C: nothing. rclpy's own handler, which runs first, shuts the
    context down, and that ends :func:`spin`. Raising ``KeyboardInterrupt`` as Python does by
    default would land in whatever code runs at that moment (a thread pool's clean-up, a
    publisher), and ros2 launch passes a second SIGINT to the node after the terminal's."""


def main(args: list[str] | None = None) -> None:
    """``ros2 run vpr_seq_ros vpr_node``; exits 0 on Ctrl-C or SIGTERM, 1 on a start-up error.

    The SIGINT handler is set before ``rclpy.init``, which chains rclpy's handler to it.
    """
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGINT, _on_sigint)
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = VprSeqNode()
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except _SHUTDOWN_ERRORS:
        if rclpy.ok():
            raise  # a real error of rclpy's, not a shutdown during start-up
    except VprSeqError as err:
        # Start-up errors (missing map or model, bad parameter) are fatal and say why.
        get_logger('vpr_seq_node').fatal(str(err))
        code = 1
    finally:
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException,
                                 *_SHUTDOWN_ERRORS):
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    if code:
        raise SystemExit(code)


if __name__ == '__main__':
    main()
