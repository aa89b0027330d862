"""The launch description shared by ``localization.launch.py`` and ``slam.launch.py``."""

from __future__ import annotations

from typing import Any

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

OPTIONAL_OVERRIDES = {
    # launch argument: parameter it sets, only when the argument is not empty (so that an
    # unset argument never masks the value of the params_file)
    'map': 'node.map_path',
    'model': 'encoder.weights',
    'preset': 'preset',
    'image_transport': 'node.image_transport',
}


def _node(context: LaunchContext, mode: str) -> list[Any]:
    overrides: dict[str, Any] = {'node.mode': mode}
    for argument, parameter in OPTIONAL_OVERRIDES.items():
        value = LaunchConfiguration(argument).perform(context)
        if value:
            overrides[parameter] = value
    use_sim_time = LaunchConfiguration('use_sim_time').perform(context).strip().lower()
    if use_sim_time not in ('true', 'false'):
        raise ValueError(f'use_sim_time must be true or false, not {use_sim_time!r}')
    overrides['use_sim_time'] = use_sim_time == 'true'
    image_topic = LaunchConfiguration('image_topic').perform(context)
    return [Node(
        package='vpr_seq_ros', executable='vpr_node', name='vpr_seq_node', output='screen',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=[('image', image_topic),
                    ('image/compressed', image_topic.rstrip('/') + '/compressed'),
                    ('odom', LaunchConfiguration('odom_topic'))])]


def node_launch_description(mode: str) -> LaunchDescription:
    """Arguments: map, model, image_topic, image_transport, odom_topic, params_file, preset,
    namespace, use_sim_time."""
    map_help = ('reference map (.npz from vpr-seq build-map); required unless params_file sets '
                'node.map_path' if mode == 'localization' else
                'where ~/save_map writes the keyframe map (.npz); empty: the params_file value')
    arguments = [
        DeclareLaunchArgument('map', default_value='', description=map_help),
        DeclareLaunchArgument('model', default_value='',
                              description='encoder weights: a checkpoint (JIST, CosPlace, '
                              'torchvision, this project) or an ONNX model card; empty: the '
                              'params_file value (none for training-free encoders)'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw',
                              description='camera image topic (its /compressed sibling when '
                              'node.image_transport is compressed)'),
        DeclareLaunchArgument('image_transport', default_value='',
                              choices=['', 'raw', 'compressed'],
                              description='raw (sensor_msgs/Image on image_topic) or compressed '
                              '(CompressedImage on image_topic/compressed); empty: the '
                              'params_file value'),
        DeclareLaunchArgument('odom_topic', default_value='/odom',
                              description='nav_msgs/Odometry for keyframe gating'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution(
            [FindPackageShare('vpr_seq_ros'), 'config', f'{mode}.yaml']),
            description='parameter file (the configuration schema under ros__parameters)'),
        DeclareLaunchArgument('preset', default_value='',
                              description='named preset applied under the parameters; empty: '
                              'the params_file value'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its relative topics'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              choices=['true', 'false'],
                              description='use /clock (ros2 bag play --clock)'),
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node, args=[mode])])
