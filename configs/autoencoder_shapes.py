"""A convolutional autoencoder on the shapes images (backbone encoder, conv decoder), probed
by k-NN and a linear probe on the frozen backbone.

  python -m jaxvision.train --config configs/autoencoder_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/autoencoder_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the default run on a 2-core CPU), ``quick`` (tests: a tiny model
and dataset, a few steps). The probes follow the protocol of every pretext method
(configs/simclr_shapes.py).
"""

import ml_collections

from jaxvision.data import shapes_data_config
from jaxvision.optim import default_optimizer_config


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "autoencoder"
  config.seed = 0
  config.total_steps = 3000
  config.batch_size = 64
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.log_every = 50
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  config.data = shapes_data_config(image_size=32, min_objects=1, max_objects=1, max_boxes=1,
                                   num_train=20000, features=("image",), flip=True)

  # C5 of the stride-2 stem is 2 x 2 at 32 px: the code is 2 x 2 x 32.
  config.model = ml_collections.ConfigDict(dict(
      backbone="resnet_small",
      # The backbone of configs/classify_localize_shapes.py, so that init_from transfers it.
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=16)),
      bottleneck=32, decoder_channels=128, min_channels=16))

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=2e-3,
                                              warmup_steps=100, schedule="cosine",
                                              weight_decay=1e-4)

  config.evals = ml_collections.ConfigDict({
      "validation": {"kind": "batches"},
      "knn": {"kind": "knn", "num_train": 5000, "k": 20, "temperature": 0.07,
              "every": config.get_ref("total_steps"), "at_start": True},
      "linear_probe": {"kind": "linear_probe", "num_train": 5000,
                       "every": config.get_ref("total_steps"), "at_start": True},
  })

  if arg == "quick":
    config.total_steps = 40
    config.batch_size = 16
    config.eval_every = 40
    config.checkpoint_every = 20
    config.log_every = 5
    config.num_pictures = 4
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 1e-2
    config.data.image_size = 16
    config.data.num_train = 64
    config.data.num_validation = 32
    config.data.num_test = 32
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.stem = "small"  # C5 at stride 8: a 2 x 2 code
    config.model.backbone_kwargs.width = 8
    config.evals.validation.at_start = True  # the held-out MSE before and after training
    config.model.bottleneck = 8
    config.model.decoder_channels = 32
    config.model.min_channels = 8
    config.evals.knn.num_train = config.evals.linear_probe.num_train = 64
    config.evals.knn.at_start = config.evals.linear_probe.at_start = False
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of autoencoder_shapes; use 'quick' or none.")
  return config
