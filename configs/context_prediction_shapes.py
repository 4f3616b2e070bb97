"""Context prediction (Doersch et al. 2015) on the shapes images, probed by k-NN and a linear
probe on the frozen backbone.

  python -m jaxvision.train --config configs/context_prediction_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/context_prediction_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the default run on a 2-core CPU), ``drop`` (channel dropping
instead of the colour projection), ``quick`` (tests: a tiny model and dataset, a few steps).

A 3 x 3 grid of 16-pixel patches, 4 pixels apart, each jittered by up to 2 pixels, spans at
most 60 of the 64 pixels. The probes follow the protocol of every pretext method
(configs/simclr_shapes.py).
"""

import ml_collections

from jaxvision.data import shapes_data_config
from jaxvision.optim import default_optimizer_config


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "context_prediction"
  config.seed = 0
  config.total_steps = 12000  # about 14 minutes on the 2-core CPU (docs/RESULTS.md)
  config.batch_size = 128
  config.eval_every = 3000
  config.checkpoint_every = 3000
  config.log_every = 50
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  config.data = shapes_data_config(image_size=64, min_objects=1, max_objects=1, max_boxes=1,
                                   num_train=20000, features=("image",), flip=False)

  config.model = ml_collections.ConfigDict(dict(
      backbone="resnet_small",
      # The backbone of configs/classify_localize_shapes.py, so that init_from transfers it.
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=16)),
      hidden=256,
      colour_guard="project",  # "project" | "drop" | "none": the chromatic-aberration guard
      grid=ml_collections.ConfigDict(dict(patch_size=16, gap=4, jitter=2))))

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=2e-3,
                                              warmup_steps=200, schedule="cosine",
                                              weight_decay=1e-4)

  config.evals = ml_collections.ConfigDict({
      "validation": {"kind": "batches"},
      "knn": {"kind": "knn", "num_train": 5000, "k": 20, "temperature": 0.07,
              "every": config.get_ref("total_steps"), "at_start": True},
      "linear_probe": {"kind": "linear_probe", "num_train": 5000,
                       "every": config.get_ref("total_steps"), "at_start": True},
  })

  if arg == "drop":
    config.model.colour_guard = "drop"
  elif arg == "quick":
    config.total_steps = 40
    config.batch_size = 32
    config.eval_every = 40
    config.checkpoint_every = 20
    config.log_every = 5
    config.num_pictures = 4
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 3e-3
    config.data.image_size = 32
    config.data.num_train = 64
    config.data.num_validation = 32
    config.data.num_test = 32
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.width = 8
    config.model.hidden = 32
    config.model.grid.patch_size = 8
    config.model.grid.gap = 2
    config.model.grid.jitter = 1
    config.evals.knn.num_train = config.evals.linear_probe.num_train = 64
    config.evals.knn.at_start = config.evals.linear_probe.at_start = False
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of context_prediction_shapes; use 'drop', "
                     "'quick' or none.")
  return config
