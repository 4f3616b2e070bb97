"""Mask R-CNN (Faster R-CNN + a mask head) on the embedded shapes dataset.

  python -m jaxvision.train --config configs/mask_rcnn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/mask_rcnn_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the reported run, sized for under 45 minutes on a 2-core CPU
with the dataset generation; see docs/RESULTS.md), ``quick`` (tests: a tiny model and
dataset, a few steps).

Everything of ``configs/faster_rcnn_shapes.py`` (the same detector, data and schedule:
its settings are imported, not copied), plus the ``masks`` feature (the visible part of
each object, uint8 ``[max_boxes, H, W]``) and the mask head (``model.mask_head``): 14 x 14
RoIAlign of each positive RoI on its FPN level, four 3 x 3 convolutions, a 2x transposed
convolution, per-class 28 x 28 mask logits (Mask R-CNN's head), trained by the sigmoid
cross-entropy of the true class's mask (``roi_mask``); at inference the masks of the final
detections are pasted into the image and thresholded at 0.5; evaluation adds the twelve
COCO mask numbers ``eval/segm_AP, segm_AP50, ...``.

The mask head's cost: it runs on the first ``roi_positive_fraction x roi_samples_per_image
= 32`` sampled RoIs per image (the slots that can hold positives), 256 RoIs per batch of 8,
each a 14 x 14 RoIAlign and four 3 x 3 convolutions at 14 x 14 plus the upsampling at
28 x 28. Its convolutions cost ``4 x 14^2 x 9 x w^2`` multiply-adds per RoI for ``w``
channels (462 M at COCO's ``w = 256``). On the 2-core CPU (train step, global batch 8,
median of 14; ``docs/BENCHMARKS.md``): Faster R-CNN 294 ms; with this head at ``w = 32``
and 2 x 2 RoIAlign samples per bin 684 ms, with one sample per bin 604 ms, and at
``w = 16`` with one sample per bin 383 ms: small convolutions run far below the CPU's
peak, and RoIAlign's backward pass is a scatter-add. This config takes the last (16
channels, one sample per bin), so that 4000 steps fit the 45-minute budget; the mask
targets keep 2 x 2 samples per bin (no backward pass). At inference the masks of 100
detections per image are pasted into 128 x 128 (two small matrix products each).
"""

from jaxvision import config_files

MASK_HEAD_CHANNELS = 16


def get_config(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"Unknown variant {arg!r} of mask_rcnn_shapes; use 'quick' or none.")
  config = config_files.sibling(__file__, "faster_rcnn_shapes").get_config(arg or None)
  config.data.features = tuple(config.data.features) + ("masks",)
  config.model.mask_head = True
  config.model.mask_pool_size = 14  # 28 x 28 masks
  config.model.mask_head_channels = MASK_HEAD_CHANNELS
  config.model.mask_head_convs = 4
  config.model.mask_sampling_ratio = 1  # one RoIAlign sample per bin (see above)
  config.model.mask_target_sampling_ratio = 2
  if arg == "quick":
    config.model.mask_head_channels = 16
  return config
