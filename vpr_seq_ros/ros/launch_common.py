"""The launch description shared by ``localization.launch.py`` and ``slam.launch.py``."""

from __future__ import annotations

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def node_launch_description(mode: str) -> LaunchDescription:
    """Arguments: map, model, image_topic, odom_topic, params_file, preset, use_sim_time."""
    map_help = ('reference map (.npz from vpr-seq build-map)' if mode == 'localization' else
                'where ~/save_map writes the keyframe map (.npz)')
    map_argument = DeclareLaunchArgument('map', description=map_help) \
        if mode == 'localization' else \
        DeclareLaunchArgument('map', default_value='vpr_seq_map.npz', description=map_help)
    arguments = [
        map_argument,
        DeclareLaunchArgument('model', default_value='',
                              description='encoder weights: a checkpoint (JIST, CosPlace, '
                              'torchvision, this project) or an ONNX model card; empty for '
                              'training-free encoders'),
        DeclareLaunchArgument('image_topic', default_value='/camera/image_raw',
                              description='camera image topic (its /compressed sibling when '
                              'node.image_transport is compressed)'),
        DeclareLaunchArgument('odom_topic', default_value='/odom',
                              description='nav_msgs/Odometry for keyframe gating'),
        DeclareLaunchArgument('params_file', default_value=PathJoinSubstitution(
            [FindPackageShare('vpr_seq_ros'), 'config', f'{mode}.yaml']),
            description='parameter file (the configuration schema under ros__parameters)'),
        DeclareLaunchArgument('preset', default_value='',
                              description='named preset applied under the parameters'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='use /clock (rosbag play --clock)'),
    ]
    overrides = {
        'node.mode': mode,
        'encoder.weights': LaunchConfiguration('model'),
        'preset': LaunchConfiguration('preset'),
        'use_sim_time': ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool),
    }
    overrides['node.map_path'] = LaunchConfiguration('map')
    node = Node(
        package='vpr_seq_ros', executable='vpr_node', name='vpr_seq_node', output='screen',
        parameters=[LaunchConfiguration('params_file'), overrides],
        remappings=[('image', LaunchConfiguration('image_topic')),
                    ('image/compressed', [LaunchConfiguration('image_topic'), '/compressed']),
                    ('odom', LaunchConfiguration('odom_topic'))])
    return LaunchDescription([*arguments, node])
