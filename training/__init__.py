"""Training subpackage (installed as ``fcn_perception.training``).

Detection data (boxes from CamVid label maps, COCO JSON), joint augmentation, losses,
the training loops for FCN and R-FCN, and the ``evaluate`` commands.  Metrics, CamVid's
classes and reader, the box rule and plots live in :mod:`fcn_perception.evaluation`.
"""
