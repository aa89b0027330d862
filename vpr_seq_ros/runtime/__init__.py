"""The node core: everything the localization / loop-closure node decides, without ROS.

The rclpy shell (``vpr_seq_ros.ros``) and ``vpr-seq replay`` both convert messages to frames
and call :class:`~vpr_seq_ros.runtime.core.NodeCore`; what it returns is what gets published.
"""
