"""vpr_seq_ros: sequential visual place recognition for ROS 2 robots.

The package is a ROS-free core laid out along the data flow (sources -> encoders -> matching
-> maps -> evaluation) with a thin rclpy shell in ``vpr_seq_ros.ros``.
"""

__version__ = '0.1.0'
