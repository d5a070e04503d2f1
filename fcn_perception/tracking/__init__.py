"""Multi-object tracking of detections across frames (no ROS): a ByteTrack-style
tracker (:mod:`~fcn_perception.tracking.bytetrack`) on a constant-velocity Kalman model
(:mod:`~fcn_perception.tracking.kalman`) with optimal assignment
(:mod:`~fcn_perception.tracking.assignment`)."""
from fcn_perception.tracking.bytetrack import ByteTracker, TrackerConfig

__all__ = ["ByteTracker", "TrackerConfig"]
