"""Evaluation: COCO AP/AR (``coco``), semantic segmentation mIoU (``segmentation``) and
calibration (``calibration``).

Import the submodule you need, e.g. ``from jaxvision.evaluation import coco``.
"""
