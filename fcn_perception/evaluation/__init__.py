"""ROS-free evaluation: the scores, the ground truth they are computed on, and plots.

* :mod:`~fcn_perception.evaluation.segmentation`: the FCN paper's table (pixel accuracy,
  mean accuracy, mean IU, frequency-weighted IU) from a confusion matrix, and the JSON
  and pictures an evaluation writes;
* :mod:`~fcn_perception.evaluation.detection`: COCO-style AP (at IoU 0.5 and over
  0.5:0.95);
* :mod:`~fcn_perception.evaluation.boxes`: the rule that derives boxes from CamVid label
  maps (CamVid has no box annotations);
* :mod:`~fcn_perception.evaluation.camvid`: CamVid's classes, palette and reader;
* :mod:`~fcn_perception.evaluation.plots`: confusion matrices, IoU bars, precision-recall
  curves, latency histograms.

Used by the bag tools (:mod:`fcn_perception.bag`) and by training; nothing here imports
ROS or the training package.
"""
