"""ROS-free images: decoding and encoding of image messages, palettes and drawing.

* :mod:`~fcn_perception.imaging.decode`: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8,
  mono8 and their 16-bit forms, padded rows) and ``CompressedImage`` (JPEG, PNG) to
  ``(H, W, 3)`` uint8 RGB, with size limits checked before decoding;
* :mod:`~fcn_perception.imaging.encode`: the inverse, for tools and test data;
* :mod:`~fcn_perception.imaging.drawing`: palette lookup tables, mask colouring,
  overlay blending and box drawing.

Used by the nodes (:mod:`fcn_perception.ros`), the bag tools (:mod:`fcn_perception.bag`)
and scripts; nothing here imports ROS.
"""
