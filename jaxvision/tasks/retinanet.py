"""Task ``retinanet``: the single-stage detector, evaluated like ``detection``.

Loss = focal loss of every anchor's class logits + box loss of the positive anchors (see
:mod:`jaxvision.models.retinanet`); the metric ``num_positive_anchors`` counts the positives
per image. Evaluation: the twelve COCO box numbers of the detections (there are no
proposals, so no ``rpn_*`` numbers), with the same pictures and PR curves as ``detection``.

The task is a :class:`~jaxvision.tasks.detection.DetectionTask` with another detector: the
config checks, data, preprocessing, batch validation, loss function, ``predict``, COCO
evaluator and pictures are ``detection``'s.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxvision.models.retinanet import RetinaNet
from jaxvision.tasks import base
from jaxvision.tasks.detection import DetectionEvaluator, DetectionTask


class SingleStageEvaluator(DetectionEvaluator):
  """:class:`~jaxvision.tasks.detection.DetectionEvaluator` without the proposal numbers."""

  def add(self, outputs: Mapping[str, np.ndarray], batch: Mapping[str, np.ndarray]) -> None:
    self.detections.add({k: outputs[k] for k in ("boxes", "scores", "classes", "valid")}, batch)

  def result(self) -> dict[str, float]:
    detailed = self.detections.detailed_result()
    if self._on_result is not None:
      self._on_result(detailed)
    return dict(detailed.stats)


@base.register("retinanet")
class RetinaNetTask(DetectionTask):
  """RetinaNet on any box dataset of ``jaxvision.data``."""

  detector = RetinaNet

  @property
  def model(self) -> RetinaNet:
    return self._model

  def _forward(self, variables, images, proposal_inputs):
    del proposal_inputs  # always {}: a single-stage detector has no proposals
    return self._model.apply(variables, self.normalize(images), train=False)

  def make_evaluator(self) -> SingleStageEvaluator:
    return SingleStageEvaluator(self.class_names, on_result=self._write_pr_curves,
                                detections=self._reference_evaluator())
