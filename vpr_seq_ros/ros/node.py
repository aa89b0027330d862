"""The rclpy shell: subscribe, convert, call the node core, publish. Nothing else.

Everything the node decides lives in :class:`vpr_seq_ros.runtime.core.NodeCore` (tested without
ROS). Frames wait in a bounded queue; a worker thread decodes, encodes and matches them, so the
subscription callback never blocks and the stalest frames are dropped under load.
"""

from __future__ import annotations

import array
import contextlib
import difflib
import importlib
import threading
import traceback
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from visualization_msgs.msg import MarkerArray

from vpr_seq_ros.config import Config, load_config
from vpr_seq_ros.conversions import stamp_to_ns, yaw_from_quaternion
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.errors import ConfigError, DecodeError, VprSeqError
from vpr_seq_ros.messages import outputs
from vpr_seq_ros.messages.images import decode_any
from vpr_seq_ros.ros.params import (DYNAMIC_PREFIXES, config_from_parameters,
                                    default_parameters, is_dynamic, parameter_description,
                                    parameter_kind)
from vpr_seq_ros.pipeline import map_config
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.runtime.queue import DroppingQueue
from vpr_seq_ros.types import Frame, Pose

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
    outputs.TOPIC_MARKERS: MarkerArray,
}


_FLOAT_TYPES = {'float': ('f', np.float32), 'double': ('d', np.float64)}
_INT_TYPES = {
    'int8': ('b', np.int8), 'uint8': ('B', np.uint8), 'int16': ('h', np.int16),
    'uint16': ('H', np.uint16), 'int32': ('i', np.int32), 'uint32': ('I', np.uint32),
    'int64': ('q', np.int64), 'uint64': ('Q', np.uint64),
}
_NUMERIC_TYPES = {**_FLOAT_TYPES, **_INT_TYPES}


def _coerce_field(idl_type: str, value: Any) -> Any:
    """A value in the Python type rclpy's C conversion expects for an IDL field type.

    Jazzy's generated setters no longer check types by default (``ROS_PYTHON_CHECK_FIELDS``),
    and the C conversion then reads an ``int`` in a ``double`` or ``octet`` field, or a
    ``numpy.float32``, as garbage. Values are therefore converted here, by the field's type.
    """
    if idl_type in ('octet', 'byte'):
        return value if isinstance(value, bytes) else bytes([int(value)])
    if idl_type in _FLOAT_TYPES:
        return float(value)
    if idl_type in _INT_TYPES:
        return int(value)
    if idl_type == 'boolean':
        return bool(value)
    if idl_type.startswith('sequence<'):
        inner = idl_type[len('sequence<'):-1].split(',')[0].strip()
        if inner in _NUMERIC_TYPES:  # rclpy keeps these as array.array
            code, dtype = _NUMERIC_TYPES[inner]
            return array.array(code, np.ascontiguousarray(value, dtype=dtype).ravel().tobytes())
        return list(value)
    if idl_type.endswith(']') and '[' in idl_type:  # fixed-size array: a numpy array
        inner = idl_type[:idl_type.index('[')]
        if inner in _NUMERIC_TYPES:
            return np.array(value, dtype=_NUMERIC_TYPES[inner][1]).ravel()
        return list(value)
    return value  # strings, nested messages


def rclpy_factory() -> outputs.Factory:
    """Message factory over rclpy's generated classes, with values coerced to the field types."""
    cache: dict[str, tuple[Any, dict[str, str]]] = {}

    def make(typename: str, **fields: Any) -> Any:
        entry = cache.get(typename)
        if entry is None:
            package, _, name = typename.split('/')
            cls = getattr(importlib.import_module(f'{package}.msg'), name)
            entry = cache[typename] = (cls, cls.get_fields_and_field_types())
        cls, types = entry
        msg = cls()
        for key, value in fields.items():
            if key not in types:
                raise TypeError(f'{typename} has no field {key!r}')
            setattr(msg, key, _coerce_field(types[key], value))
        return msg

    return make


class VprSeqNode(Node):
    """Sequential place recognition node: localization against a map, or loop closures."""

    def __init__(self, **node_kwargs: Any) -> None:
        """``node_kwargs`` go to :class:`rclpy.node.Node` (context, parameter_overrides, ...)."""
        super().__init__('vpr_seq_node', **node_kwargs)
        self.declare_parameter('preset', '', ParameterDescriptor(
            description='named preset of config/presets applied under the parameters',
            read_only=True))
        self.declare_parameter('config_file', '', ParameterDescriptor(
            description='YAML file of the configuration schema applied under the parameters',
            read_only=True))
        # In localization mode the map's own configuration is the base layer (as for
        # vpr-seq evaluate and replay): map < preset < config_file < parameters.
        defaults = default_parameters(Config())
        for name in ('node.mode', 'node.map_path'):
            self._declare(name, defaults[name])
        mode = self.get_parameter('node.mode').value
        map_path = self.get_parameter('node.map_path').value
        refmap = load_map(map_path) if mode == 'localization' and map_path else None
        base = load_config(self.get_parameter('preset').value or None,
                           self.get_parameter('config_file').value or None,
                           base=map_config(refmap) if refmap is not None else None)
        self.schema_names = frozenset(default_parameters(base))
        for name, default in default_parameters(base).items():
            if name not in ('node.mode', 'node.map_path'):
                self._declare(name, default)
        values = {name: self.get_parameter(name).value for name in self.schema_names}
        self.cfg = config_from_parameters(values, base)  # raises: fatal at start-up
        self._warn_unknown_overrides()
        # model and map load once, here
        self.core = NodeCore(self.cfg, build_encoder(self.cfg.encoder), refmap) \
            if refmap is not None else NodeCore.from_config(self.cfg)
        self.make = rclpy_factory()
        self.lock = threading.Lock()
        self.queue: DroppingQueue = DroppingQueue(self.cfg.node.queue_depth)
        self.query_pose: Pose | None = None
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
        self.worker = threading.Thread(target=self._work, name='vpr_seq_inference', daemon=True)
        self.worker.start()
        self.get_logger().info(
            f'ready: mode {self.cfg.node.mode}, method {self.cfg.matching.method}, '
            f'L={self.cfg.sequence.length}, map {self.core.diagnostics.map_size} frames, '
            f'images on {self.image_sub.topic_name}')

    def _warn_unknown_overrides(self) -> None:
        """rclpy ignores overrides of undeclared parameters: name them (typos in YAML)."""
        overrides = getattr(self, '_parameter_overrides', {})  # rclpy keeps them here
        unknown = sorted(name for name in overrides
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

    # ------------------------------------------------------------------ callbacks
    def _stamp_ns(self, header: Any) -> int:
        """A header stamp in ns; a zero stamp is replaced by the node's clock (receive time)."""
        return stamp_to_ns(header.stamp, self.get_clock().now().nanoseconds)

    def _on_image(self, msg: Any) -> None:
        self.frames_in_window += 1
        dropped = self.queue.put(msg)
        if dropped:
            with self.lock:
                self.core.diagnostics.frames_dropped_queue += dropped

    def _on_odom(self, msg: Odometry) -> None:
        p = msg.pose.pose
        q = p.orientation
        pose = Pose(p.position.x, p.position.y, p.position.z,
                    yaw_from_quaternion(q.x, q.y, q.z, q.w))
        with self.lock:
            self.query_pose = pose
            self.core.on_odometry(self._stamp_ns(msg.header), pose)

    def _work(self) -> None:
        index = 0
        while not self.stop.is_set() and rclpy.ok(context=self.context):
            msg = self.queue.get(timeout=0.5)
            if msg is None or self.stop.is_set():
                continue
            try:
                self._process(msg, index)
            except Exception:  # noqa: BLE001 - the worker must outlive one bad frame
                self.get_logger().error(f'frame {index} failed:\n{traceback.format_exc()}',
                                        throttle_duration_sec=5.0)
            index += 1

    def _process(self, msg: Any, index: int) -> None:
        try:
            image = decode_any(msg)
        except DecodeError as err:
            with self.lock:
                self.core.diagnostics.frames_dropped_malformed += 1
            self.get_logger().warning(f'dropped a malformed image: {err}',
                                      throttle_duration_sec=5.0)
            return
        frame = Frame(index=index, stamp_ns=self._stamp_ns(msg.header), image=image)
        try:
            with self.lock:
                step = self.core.on_frame(frame)
                query_pose = self.query_pose
                cfg = self.cfg
        except VprSeqError as err:
            self.get_logger().error(f'frame skipped: {err}', throttle_duration_sec=5.0)
            return
        for out in outputs.step_messages(self.make, step, cfg.node.map_frame,
                                         cfg.node.max_distance, query_pose,
                                         cfg.node.publish_markers):
            if self.stop.is_set():
                return
            self.pubs[out.topic].publish(out.msg)

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
        path = self.cfg.node.map_path or 'vpr_seq_map.npz'
        try:
            with self.lock:
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
        if self.frames_in_window == 0 and self.core.diagnostics.frames_received == 0:
            self.get_logger().warning(
                f'no image received yet on {self.image_sub.topic_name}: check the image topic '
                f'remapping, node.image_transport ({self.cfg.node.image_transport}) and QoS '
                '(sensor data: best effort)', throttle_duration_sec=10.0)
        with self.lock:
            msg = outputs.diagnostics(self.make, self.core.diagnostics,
                                      self.get_clock().now().nanoseconds,
                                      f'vpr_seq_ros: {self.cfg.node.mode}',
                                      float(self.frames_in_window))
        self.frames_in_window = 0
        self.diag_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    """``ros2 run vpr_seq_ros vpr_node``."""
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = VprSeqNode()
        executor = MultiThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except VprSeqError as err:
        # Start-up errors (missing map or model, bad parameter) are fatal and say why.
        get_logger('vpr_seq_node').fatal(str(err))
        code = 1
    finally:
        # Ctrl-C reaches a launched node twice (terminal and launch): the second must not
        # turn the clean-up into a traceback.
        with contextlib.suppress(KeyboardInterrupt, ExternalShutdownException):
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    if code:
        raise SystemExit(code)


if __name__ == '__main__':
    main()
