"""``fcn-perception train ...`` and ``fcn-perception evaluate ...``."""
from __future__ import annotations

import importlib

TASKS = {
    "train": {
        "segmentation": ("fcn_perception.training.train_segmentation", "add_train_args",
                         "train_cli", "Train FCN-8s/16s/32s or U-Net on CamVid"),
        "detection": ("fcn_perception.training.train_detection", "add_train_args",
                      "train_main", "Train R-FCN on CamVid-derived or COCO boxes"),
        "ship": ("fcn_perception.training.engine", "add_ship_args", "ship_cli",
                 "Copy a finished run's weights and card into the package"),
    },
    "evaluate": {
        "segmentation": ("fcn_perception.training.evaluate_segmentation", "add_eval_args",
                         "eval_main", "Pixel accuracy, mean IoU, ... on a split"),
        "detection": ("fcn_perception.training.evaluate_detection", "add_eval_args",
                      "eval_main", "mAP@0.5 and COCO mAP on a split"),
    },
}


def _lazy(module: str, func: str):
    def run(args):
        return getattr(importlib.import_module(module), func)(args)

    return run


def register(subparsers) -> None:
    for verb, tasks in TASKS.items():
        parser = subparsers.add_parser(verb, help=f"{verb} a model")
        sub = parser.add_subparsers(dest="task", required=True, metavar="TASK")
        for task, (module, add_args, func, help_text) in tasks.items():
            p = sub.add_parser(task, help=help_text, description=help_text)
            try:
                getattr(importlib.import_module(module), add_args)(p)
            except ModuleNotFoundError:
                continue
            p.set_defaults(func=_lazy(module, func))
