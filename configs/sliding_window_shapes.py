"""The sliding-window detector (the lecture's strawman) on the embedded shapes detection data.

  python -m jaxvision.train --config configs/sliding_window_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/sliding_window_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the comparison run of docs/RESULTS.md "Detection lineage"),
``quick`` (tests: a tiny model and dataset, a few steps).

The classify_localize model (``jaxvision.models.classify_localize``, with a background class)
applied to every window of a fixed grid: square windows of 16, 24, 32, 48 and 64 pixels at
strides 8, 8, 8, 12 and 16 (664 windows of a 128 px image; objects are 8-64 px), each warped
to 32 x 32 (``ops.warp_regions``, no context), classified, its predicted box mapped back to
the image, then per-class NMS (``tasks/rcnn.py``, task ``sliding_window_detection``). The
window classifier is trained on windows of the detection training split (64 per image, a
quarter foreground at IoU >= 0.5), the same data as the other detectors; see
``jaxvision.tasks.rcnn`` for why it is not taken from a classify_localize run.
Data: ``configs/faster_rcnn_shapes.py``'s (same held-out split).
"""

import ml_collections

from jaxvision import config_files
from jaxvision.data import CLASS_NAMES


def get_config(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"Unknown variant {arg!r} of sliding_window_shapes; use 'quick' or none.")
  base = config_files.sibling(__file__, "faster_rcnn_shapes")
  config = base.get_config("quick" if arg == "quick" else None)
  config.task = "sliding_window_detection"
  del config["data_proposals"]  # the windows are the task's own
  config.total_steps = 3000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.sliding_windows = ml_collections.ConfigDict(dict(
      sizes=(16, 24, 32, 48, 64),  # window sides (pixels)
      strides=(8, 8, 8, 12, 16)))  # one per size (pixels)
  config.model = ml_collections.ConfigDict(dict(
      num_classes=len(CLASS_NAMES),
      region_network="classify_localize",
      backbone="resnet_small",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=16, norm="batch")),
      neck_channels=32, hidden=128, roi_feature="C2",
      warp_size=32,  # the classifier's input (pixels)
      context_padding=0.0,  # a window is classified as it is
      warp_sampling_ratio=2,
      roi_samples_per_image=64, roi_positive_fraction=0.25,
      smooth_l1_beta=1.0 / 9.0,
      max_detections=100, detection_candidates=1000,
      region_chunk=128,  # windows per image per CNN call at inference (memory)
      dtype="float32"))

  if arg == "quick":
    config.total_steps = 10
    config.eval_every = 10
    config.checkpoint_every = 5
    config.sliding_windows.sizes = (16, 32)
    config.sliding_windows.strides = (8, 16)  # 49 + 9 windows of a 64 px image
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.width = 8
    config.model.neck_channels = 8
    config.model.hidden = 32
    config.model.warp_size = 16
    config.model.roi_samples_per_image = 16
    config.model.detection_candidates = 200
    config.model.region_chunk = 24
    config.optimizer.learning_rate = 3e-3
  return config
