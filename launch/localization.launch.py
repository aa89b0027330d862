"""Localization against a reference map.

ros2 launch vpr_seq_ros localization.launch.py map:=/path/map.npz [model:=weights.pth]
    [image_topic:=/camera/image_raw] [image_transport:=raw|compressed] [params_file:=my.yaml]
    [preset:=NAME] [namespace:=NS] [use_sim_time:=true]
"""

from launch import LaunchDescription

from vpr_seq_ros.ros.launch_common import node_launch_description


def generate_launch_description() -> LaunchDescription:
    return node_launch_description('localization')
