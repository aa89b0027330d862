"""Loop-closure candidates against the robot's own past (no prior map).

ros2 launch vpr_seq_ros slam.launch.py [map:=where_save_map_writes.npz] [model:=weights.pth]
    [image_topic:=/camera/image_raw] [image_transport:=raw|compressed] [odom_topic:=/odom]
    [params_file:=my.yaml] [preset:=NAME] [namespace:=NS] [use_sim_time:=true]
"""

from launch import LaunchDescription

from vpr_seq_ros.ros.launch_common import node_launch_description


def generate_launch_description() -> LaunchDescription:
    return node_launch_description('slam')
