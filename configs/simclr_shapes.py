"""SimCLR pretraining on the shapes classes (the embedded synthetic dataset), probed by k-NN
and a linear probe on the frozen backbone.

  python -m jaxvision.train --config configs/simclr_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/simclr_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the default run on a 2-core CPU), ``adam`` (the same with Adam
instead of LARS), ``quick`` (tests: a tiny model and dataset, a few steps).

The probes follow the issue's protocol for every pretext method: frozen, unaugmented global
pool of the backbone (before the projection head) of 5000 labelled train images; k-NN with
cosine similarity, k = 20, votes weighted by exp(s / 0.07); a multinomial logistic regression;
both scored on the held-out split.
"""

import ml_collections

from jaxvision.data import shapes_data_config
from jaxvision.optim import default_optimizer_config


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "simclr"
  config.seed = 0
  config.total_steps = 3000
  config.batch_size = 128
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.log_every = 50
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  # Single-object images; only the image is trained on, the probes read the image label.
  config.data = shapes_data_config(image_size=32, min_objects=1, max_objects=1, max_boxes=1,
                                   num_train=20000, features=("image",), flip=False)

  config.model = ml_collections.ConfigDict(dict(
      backbone="resnet_small",
      # The backbone of configs/classify_localize_shapes.py, so that init_from transfers it.
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=16)),
      hidden=256, projection_dim=64, temperature=0.2))

  # SimCLR's view recipe; crops keep at least a fifth of the image, because a shape covers
  # only part of it, and the blur is sized for 32 px images.
  config.augment = ml_collections.ConfigDict(dict(
      crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=True, jitter_probability=0.8,
      jitter_strength=1.0, grayscale_probability=0.2, blur_probability=0.5,
      blur_sigma=(0.1, 1.0)))

  # LARS with warmup and cosine decay, as the paper trains (``:adam`` for Adam).
  config.optimizer = default_optimizer_config(name="lars", learning_rate=2.0, warmup_steps=150,
                                              schedule="cosine", weight_decay=1e-6,
                                              momentum=0.9, trust_coefficient=1e-3)

  config.evals = ml_collections.ConfigDict({
      "validation": {"kind": "batches"},
      "knn": {"kind": "knn", "num_train": 5000, "k": 20, "temperature": 0.07,
              "at_start": True},
      "linear_probe": {"kind": "linear_probe", "num_train": 5000, "at_start": True},
  })

  if arg == "adam":
    config.optimizer = default_optimizer_config(name="adamw", learning_rate=2e-3,
                                                warmup_steps=150, schedule="cosine",
                                                weight_decay=1e-4)
  elif arg == "quick":
    config.total_steps = 40
    config.batch_size = 32
    config.eval_every = 40
    config.checkpoint_every = 20
    config.log_every = 5
    config.num_pictures = 4
    config.optimizer.warmup_steps = 2
    config.optimizer.learning_rate = 5.0  # LARS: each layer moves 0.5 % of its norm a step.
    config.data.image_size = 16
    config.data.num_train = 64
    config.data.num_validation = 32
    config.data.num_test = 32
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.width = 8
    config.model.hidden = 32
    config.model.projection_dim = 16
    # Milder views, so that 40 steps learn visibly (the tests check the loss falls).
    config.augment.crop_scale = (0.5, 1.0)
    config.augment.jitter_strength = 0.5
    config.augment.grayscale_probability = 0.0
    config.augment.blur_probability = 0.0
    config.evals.knn.num_train = config.evals.linear_probe.num_train = 64
    config.evals.knn.at_start = config.evals.linear_probe.at_start = False
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of simclr_shapes; use 'adam', 'quick' or none.")
  return config
