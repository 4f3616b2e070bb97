"""Tasks ``rcnn`` and ``sliding_window_detection``: detectors that run a CNN once per region.

Both are the ``detection`` task (:class:`~jaxvision.tasks.detection.DetectionTask`: data,
COCO evaluation, pictures, PR curves and ``predict`` unchanged) with the detector
:class:`~jaxvision.models.rcnn.RCNN`, which warps every region out of the image and
classifies it on its own (see ``jaxvision.models.rcnn``). Loss = ``roi_classifier`` +
``roi_box`` on regions sampled as Fast R-CNN samples them.

* ``rcnn``: the regions are the proposals of the data step
  (``config.model.proposal_source = "data"``, ``config.data_proposals``: selective search
  or synthetic jittered boxes, exactly as Fast R-CNN's), classified by the ``box_head``
  region network.
* ``sliding_window_detection``: the lecture's strawman. The regions are every window of a
  fixed multi-scale grid (``config.sliding_windows``: ``sizes`` and ``strides`` in pixels;
  :func:`sliding_windows`), the same in every image, in training and at test time, and the
  region network is the ``classify_localize`` model (with a background class; its box,
  mapped from the window back to the image, corrects the window). The window classifier is
  trained here, on windows of the detection training split (a quarter foreground at IoU >=
  0.5, plus the ground-truth boxes themselves), rather than taken from a ``classify_localize``
  run: that run sees one centred object per image and has no background class, so its
  score of a window would not say whether the window holds an object at all, and it would
  be trained on other data than the detectors it is compared with. Here every method of the
  comparison learns from the same images and boxes for a set number of steps. (Its
  ``rpn_*`` numbers score the first 100 windows of the grid as proposals: they describe
  the grid, not the detector.)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision.models.rcnn import RCNN
from jaxvision.tasks import base
from jaxvision.tasks.detection import DetectionTask


def sliding_windows(image_size: int, sizes: Sequence[int], strides: Sequence[int]
                    ) -> np.ndarray:
  """Every square window of each size at each stride inside a square image.

  Windows of size ``s`` start at ``0, t, 2t, ...`` along each axis (stride ``t``), plus one
  flush with the far edge when the stride does not reach it, so the grid covers the image.

  Args:
    image_size: side of the image (pixels).
    sizes: window sides (pixels), each at most ``image_size``.
    strides: one stride (pixels, >= 1) per size.

  Returns:
    ``float32 [K, 4]`` ``(x1, y1, x2, y2)`` windows, sizes in the given order, row-major.
  """
  sizes, strides = tuple(sizes), tuple(strides)
  if not sizes or len(sizes) != len(strides):
    raise ValueError(f"config.sliding_windows needs one stride per window size; got sizes "
                     f"{sizes} and strides {strides}.")
  windows = []
  for size, stride in zip(sizes, strides):
    if not 0 < size <= image_size or stride < 1:
      raise ValueError(f"Window size {size} must be in (0, data.image_size={image_size}] and "
                       f"its stride {stride} >= 1.")
    starts = np.arange(0, image_size - size + 1, stride)
    if starts[-1] != image_size - size:
      starts = np.append(starts, image_size - size)
    y, x = np.meshgrid(starts, starts, indexing="ij")
    corners = np.stack([x.ravel(), y.ravel()], axis=1)
    windows.append(np.concatenate([corners, corners + size], axis=1))
  return np.concatenate(windows).astype(np.float32)


@base.register("rcnn")
class RCNNTask(DetectionTask):
  """R-CNN: the proposals of the data step, each warped and classified by its own CNN pass."""

  detector = RCNN
  compute_dtypes = ("float32",)

  def __init__(self, config: ml_collections.ConfigDict, mesh=None):
    super().__init__(config, mesh)
    self._check_regions()

  def _check_regions(self) -> None:
    if not self.uses_data_proposals:
      raise ValueError("The rcnn task classifies proposals made by the data step: set "
                       "config.model.proposal_source='data' and config.data_proposals "
                       "(see configs/rcnn_shapes.py).")

  @property
  def model(self) -> RCNN:
    return self._model


@base.register("sliding_window_detection")
class SlidingWindowTask(RCNNTask):
  """A window classifier slid over a fixed multi-scale grid (``config.sliding_windows``)."""

  def _check_regions(self) -> None:
    if self.uses_data_proposals:
      raise ValueError("sliding_window_detection classifies its own grid of windows "
                       "(config.sliding_windows); remove config.model.proposal_source.")
    settings = self.config.get("sliding_windows")
    if settings is None:
      raise ValueError("sliding_window_detection needs config.sliding_windows (sizes, "
                       "strides; see configs/sliding_window_shapes.py).")
    self.windows = sliding_windows(self.image_size, settings.sizes, settings.strides)

  def _window_inputs(self, batch_size: int) -> dict[str, Any]:
    """The grid as every image's proposals, all valid."""
    count = len(self.windows)
    return {"proposals": jnp.broadcast_to(jnp.asarray(self.windows), (batch_size, count, 4)),
            "proposal_valid": jnp.ones((batch_size, count), bool)}

  def _proposal_inputs(self, batch: Mapping[str, Any]) -> dict[str, Any]:
    return self._window_inputs(batch["image"].shape[0])

  def _forward(self, variables, images, proposal_inputs):
    del proposal_inputs  # ``predict`` passes none: the windows are the task's.
    return super()._forward(variables, images, self._window_inputs(images.shape[0]))
