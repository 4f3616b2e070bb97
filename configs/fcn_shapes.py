"""Semantic segmentation of the embedded shapes dataset: an FCN, or the sliding-window baseline.

  python -m jaxvision.train --config configs/fcn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/fcn_shapes.py:quick --workdir DIR

Seven classes: background and the six shapes (1-4 per 64 x 64 image, 8-32 px, occluding
each other). Variants (``:arg``): none (the default run: the FCN with the best upsampler
found, sized for a 2-core CPU), ``quick`` (tests: a tiny model and dataset, a few steps),
one per upsampler (``nearest``, ``bed_of_nails``, ``max_unpool``, ``bilinear``,
``transposed``: the default recipe with only ``model.upsampler`` changed, for the
comparison table), and ``sliding_window`` (the baseline: a small CNN classifies the centre
pixel of the patch around every pixel; evaluated once, at the end, because classifying
every pixel of the validation split from its own patch is slow, which is its point).

Model fields (``model.name = "fcn"``): ``upsampler``, ``backbone`` and ``backbone_kwargs``
(the shared ResNet; ``stem="stride2"`` puts C2..C5 at strides 2..16), ``decoder_channels``
(the decoder's width at C5, C4, C3, C2 and the input resolution), ``skips`` (add the
encoder's map at every scale, FCN-8s style). Sliding window (``model.name =
"sliding_window"``): ``patch_size`` (odd), ``pixels_per_image`` (sampled per image per
training step), ``rows_per_chunk`` (image rows classified together at inference). Both:
``class_names`` (empty: "background" + the dataset's), ``class_weights`` (one per class;
empty: all 1), ``boundary_ignore_width`` (pixels on each side of every class boundary left
out of training and scoring; 0 here, so the reported mIoU counts the boundaries).
``augment``: optional random resized crop (the flip is ``data.flip``).

Budget: 10000 steps of 16 images; a step of the default model takes about 60 ms on the
2-core CPU (2 devices, other jobs idle): the whole run, dataset generation and four
evaluations included, took 11 min 23 s and reached validation mIoU 0.870 (docs/RESULTS.md).
"""

import ml_collections

from jaxvision.data import shapes_data_config
from jaxvision.optim import default_optimizer_config

UPSAMPLERS = ("nearest", "bed_of_nails", "max_unpool", "bilinear", "transposed")
# The upsampler of the default run: the best of the comparison in docs/RESULTS.md (each
# upsampler 2500 steps of this recipe, validation mIoU): bilinear 0.730, nearest 0.716,
# transposed 0.712 (1.9x the step time), bed_of_nails 0.696, max_unpool 0.526.
BEST_UPSAMPLER = "bilinear"
# Loss weights: background, then the six shapes.
BACKGROUND_WEIGHTED = (0.3, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def fcn_model_config(upsampler: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="fcn",
      upsampler=upsampler,
      backbone="resnet_small",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=16,
                                                      stage_sizes=(1, 1, 1, 1))),
      # C5, C4, C3, C2, image: wide where small shapes are recognised, narrow where the maps
      # are large (XLA:CPU's weight gradients of high-resolution convolutions are slow).
      decoder_channels=(64, 64, 32, 16, 8),
      skips=True,
      class_names=(),
      # Background covers ~87% of the pixels; mean IoU weighs each class alike.
      class_weights=BACKGROUND_WEIGHTED,
      boundary_ignore_width=0))


def sliding_window_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name="sliding_window",
      backbone="resnet_tiny",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=8)),
      patch_size=25,  # about the largest object: context enough to tell the shapes apart
      pixels_per_image=16,
      rows_per_chunk=8,
      class_names=(),
      class_weights=BACKGROUND_WEIGHTED,
      boundary_ignore_width=0))


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "semantic_segmentation"
  config.seed = 0
  config.total_steps = 10000
  config.batch_size = 16
  config.eval_every = 2500
  config.checkpoint_every = 2500
  config.log_every = 100
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  config.data = shapes_data_config(image_size=64, min_objects=1, max_objects=4,
                                   num_train=20000, num_validation=1000, num_test=1000,
                                   features=("image", "semantic"))
  config.model = fcn_model_config(BEST_UPSAMPLER)
  config.augment = ml_collections.ConfigDict(dict(
      random_resized_crop=False, crop_scale=(0.5, 1.0), crop_ratio=(3 / 4, 4 / 3)))
  config.optimizer = default_optimizer_config(name="adamw", learning_rate=5e-3,
                                              warmup_steps=200, schedule="cosine",
                                              weight_decay=1e-4)

  if arg == "quick":
    config.total_steps = 12
    config.eval_every = 12
    config.checkpoint_every = 6
    config.log_every = 3
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 0.05  # Adam moves a weight ~lr a step: 12 steps
    config.num_pictures = 4
    config.data.image_size = 32
    config.data.num_train = 64
    config.data.num_validation = 32
    config.data.num_test = 32
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.width = 8
    config.model.decoder_channels = (8, 8, 8, 8, 8)
  elif arg in UPSAMPLERS:
    config.model.upsampler = arg
  elif arg == "sliding_window":
    config.model = sliding_window_model_config()
    config.eval_every = config.total_steps
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of fcn_shapes; use none, 'quick', "
                     f"'sliding_window' or an upsampler {UPSAMPLERS}.")
  return config
