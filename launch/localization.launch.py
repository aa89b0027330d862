"""Localization against a reference map.

ros2 launch vpr_seq_ros localization.launch.py map:=/path/map.npz [model:=weights.pth]
    [image_topic:=/camera/image_raw] [params_file:=my.yaml] [use_sim_time:=true]
"""

from vpr_seq_ros.ros.launch_common import node_launch_description


def generate_launch_description():
    return node_launch_description('localization')
