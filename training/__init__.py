"""Training subpackage (installed as ``fcn_perception.training``).

CamVid data, joint augmentation, losses, metrics, the training loops for FCN and
R-FCN, and evaluation.
"""
