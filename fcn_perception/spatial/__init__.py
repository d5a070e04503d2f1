"""Depth and camera geometry (no ROS): time synchronisation of colour, depth and
camera_info (:mod:`~fcn_perception.spatial.sync`), depth images and intrinsics
(:mod:`~fcn_perception.spatial.depth`), 3D positions of detections and labelled point
clouds (:mod:`~fcn_perception.spatial.project`)."""
