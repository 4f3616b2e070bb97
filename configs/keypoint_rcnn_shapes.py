"""Keypoint R-CNN (Faster R-CNN + a keypoint head) on the embedded shapes dataset.

  python -m jaxvision.train --config configs/keypoint_rcnn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/keypoint_rcnn_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the reported run, sized for under 45 minutes on a 2-core CPU
with the dataset generation; see docs/RESULTS.md), ``quick`` (tests: a tiny model and
dataset, a few steps).

Everything of ``configs/faster_rcnn_shapes.py`` (the same detector, data and optimizer:
its settings are imported, not copied) but a longer schedule (5500 steps instead of 4000:
at 4000 the keypoints were still improving, docs/RESULTS.md), plus the ``keypoints`` feature (each object's four
extreme points, top, right, bottom, left, with COCO visibility: 2 visible, 1 occluded;
a horizontal flip swaps right and left by the dataset's flip permutation) and the keypoint
head (``model.keypoint_head``): 14 x 14 RoIAlign of each positive RoI on its FPN level,
eight 3 x 3 convolutions, a stride-2 transposed convolution and 2x bilinear upsampling to
one 56 x 56 heatmap per keypoint (Keypoint R-CNN's head), trained by the softmax
cross-entropy over each heatmap's positions (``roi_keypoint``); at inference each final
detection's keypoints are the maxima of its heatmaps resized to the box (torchvision's
decoding), refined to a quarter pixel (``keypoint_decode_upsample = 4``: the resized map
four times finer around each maximum; the shapes objects are small, a whole pixel is a
large part of the OKS tolerance). Evaluation adds the ten COCO keypoint numbers ``eval/keypoints_AP,
keypoints_AP50, ...``: OKS with the sigma 0.05 for every keypoint (``keypoint_sigmas``,
inside COCO's 0.025-0.107 range), on the objects' visible areas.

The keypoint head's cost: it runs on the first ``roi_positive_fraction x
roi_samples_per_image = 32`` sampled RoIs per image (the slots that can hold positives),
256 RoIs per batch of 8. Its convolutions cost ``8 x 14^2 x 9 x w^2`` multiply-adds per RoI
for ``w`` channels (3.7 G at Keypoint R-CNN's ``w = 512``); this config makes them 16 wide
(3.6 M per RoI, 0.9 G per batch forward) instead of 512, which would cost 1024 times as
much and dwarf the rest of the detector at 128 px, and pools its 14 x 14 features with one
RoIAlign sample per bin instead of 2 x 2 (RoIAlign's backward pass, a scatter-add, is slow
on CPU). Measured on the shared 2-core machine (train steps of the default models, global
batch 8): Faster R-CNN 0.86 s, this config 1.36 s; with 32 channels and 2 x 2 samples per
bin 2.6 s (noisy: the machine was shared).
"""

from jaxvision import config_files

KEYPOINT_HEAD_CHANNELS = 16
# OKS sigma of every shapes keypoint (the figure; COCO's range is 0.025-0.107).
SHAPES_KEYPOINT_SIGMA = 0.05


def get_config(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"Unknown variant {arg!r} of keypoint_rcnn_shapes; use 'quick' or none.")
  config = config_files.sibling(__file__, "faster_rcnn_shapes").get_config(arg or None)
  config.data.features = tuple(config.data.features) + ("keypoints",)
  num_keypoints = config.data.num_keypoints  # the extreme points: 4 (top, right, ...)
  config.model.keypoint_head = True
  config.model.num_keypoints = num_keypoints
  config.model.keypoint_pool_size = 14  # 56 x 56 heatmaps
  config.model.keypoint_heatmap_size = 56
  config.model.keypoint_sampling_ratio = 1  # one bilinear sample per bin (see above)
  config.model.keypoint_head_channels = KEYPOINT_HEAD_CHANNELS
  config.model.keypoint_head_convs = 8
  config.model.keypoint_loss_weight = 1.0
  config.model.keypoint_decode_upsample = 4  # quarter-pixel keypoints (see above)
  config.keypoint_sigmas = (SHAPES_KEYPOINT_SIGMA,) * num_keypoints
  # Pictures: consecutive extreme points joined in a loop (top-right-bottom-left-top).
  config.keypoint_skeleton = tuple((k, (k + 1) % num_keypoints) for k in range(num_keypoints))
  if arg == "quick":
    config.model.keypoint_head_channels = 8
  else:
    config.total_steps = 5500
  return config
