"""The thin rclpy shell: the only code that imports rclpy or ROS message packages.

``node.py`` needs a ROS 2 installation (Humble or Jazzy); ``params.py`` is plain Python so the
parameter projection is tested everywhere.
"""
