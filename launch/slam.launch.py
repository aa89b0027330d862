"""Loop-closure candidates against the robot's own past (no prior map).

ros2 launch vpr_seq_ros slam.launch.py [model:=weights.pth] [image_topic:=/camera/image_raw]
    [odom_topic:=/odom] [params_file:=my.yaml] [use_sim_time:=true]
"""

from vpr_seq_ros.ros.launch_common import node_launch_description


def generate_launch_description():
    return node_launch_description('slam')
