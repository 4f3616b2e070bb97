"""Gated PixelCNN (or the original masked PixelCNN) on binarized 28 x 28 grey shapes.

  python -m jaxvision.train --config configs/pixelcnn_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/pixelcnn_shapes.py:plain --workdir DIR

The shapes images are converted to grey and binarized with a fixed threshold (> 127;
``model.binarize="stochastic"`` draws them instead), so the model learns the background
blobs as well as the shapes. Held-out likelihood: ``eval/nll_nats`` (nats per image) and
``eval/bits_per_dim`` on the validation split; a sample grid at every evaluation.

Variants (``:arg``, comma-separated): none (the gated PixelCNN, minutes on a 2-core CPU),
``plain`` (the masked PixelCNN of van den Oord et al. 2016a), ``independent`` (the baseline:
independent pixels), ``quick`` (tests: a tiny model and dataset, a few steps).
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import pixels_data_config


def get_config(arg=None):
  variants = set(arg.split(",")) if arg else set()
  unknown = sorted(variants - {"quick", "plain", "independent"})
  if unknown:
    raise ValueError(f"Unknown variant(s) {unknown} of pixelcnn_shapes; use 'quick', 'plain', "
                     "'independent'.")
  config = ml_collections.ConfigDict()
  config.task = "pixelcnn"
  config.seed = 0
  config.total_steps = 1000
  config.batch_size = 32
  config.eval_every = 500
  config.checkpoint_every = 500
  config.log_every = 50
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"

  config.data = pixels_data_config()

  config.model = ml_collections.ConfigDict(dict(
      architecture="gated_pixelcnn",  # "gated_pixelcnn" | "pixelcnn" | "independent"
      pixels="binary",  # "binary" (Bernoulli) | "8bit" (256-way softmax)
      binarize="threshold",  # "threshold" (> 127) | "stochastic" (p = value / 255)
      num_classes=0,  # 0: unconditional; -1: conditioned on the source's classes
      sampler="fast",  # "fast" (only the rows the next pixel depends on) | "naive"
      output="softmax",  # "softmax" | "logistic_mixture" (8-bit pixels, PixelCNN++)
      num_mixtures=5,  # components of the logistic mixture
      network=ml_collections.ConfigDict(dict(features=16, num_layers=6, kernel=5)),
  ))
  if "plain" in variants:
    config.model.architecture = "pixelcnn"
    config.model.network = ml_collections.ConfigDict(dict(
        features=32, num_layers=6, first_kernel=7, kernel=3))

  if "independent" in variants:
    config.model.architecture = "independent"
    config.model.network = ml_collections.ConfigDict()

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=2e-3, warmup_steps=100,
                                              schedule="cosine", weight_decay=0.0,
                                              grad_clip_norm=1.0)
  config.evals = ml_collections.ConfigDict({
      "likelihood": {"kind": "likelihood"},
      "samples": {"kind": "samples", "num_samples": 16, "every": config.get_ref("total_steps")},
  })

  if "quick" in variants:
    config.total_steps = 30
    config.batch_size = 16
    config.eval_every = 30
    config.checkpoint_every = 10
    config.log_every = 5
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 5e-3
    config.data.image_size = 16
    config.data.num_train = 256
    config.data.num_validation = 32
    config.data.num_test = 32
    if "independent" not in variants:
      config.model.network.update(features=8, num_layers=2, kernel=3)
    config.evals.samples.num_samples = 4
  return config
