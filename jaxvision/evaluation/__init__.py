"""Evaluation: the evaluators ``config.evals`` names (``evaluators``), COCO AP/AR (``coco``),
semantic segmentation mIoU (``segmentation``), calibration (``calibration``), the k-NN
and linear probes of frozen features (``probes``), the Frechet distance (``frechet``) and
panoptic quality (``panoptic``).

Import the submodule you need, e.g. ``from jaxvision.evaluation import coco``.
"""
