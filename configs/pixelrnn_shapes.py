"""PixelRNN (Row LSTM) on binarized 28 x 28 grey shapes, the data of
``configs/pixelcnn_shapes.py`` (same held-out images and binarization).

  python -m jaxvision.train --config configs/pixelrnn_shapes.py --workdir DIR

Variants (``:arg``, comma-separated): none (minutes on a 2-core CPU), ``diagonal`` (Diagonal
BiLSTM layers instead of Row LSTM ones), ``quick`` (tests: a tiny model and dataset, a few
steps).
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import pixels_data_config


def get_config(arg=None):
  variants = set(arg.split(",")) if arg else set()
  unknown = sorted(variants - {"quick", "diagonal"})
  if unknown:
    raise ValueError(f"Unknown variant(s) {unknown} of pixelrnn_shapes; use 'quick', "
                     "'diagonal'.")
  config = ml_collections.ConfigDict()
  config.task = "pixelrnn"
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
      architecture="row_lstm",  # "row_lstm" | "diagonal_bilstm"
      pixels="binary", binarize="threshold", num_classes=0,
      sampler="fast",  # "fast" (LSTM states carried row by row) | "naive"
      output="softmax",  # "softmax" | "logistic_mixture" (8-bit pixels, PixelCNN++)
      num_mixtures=5,  # components of the logistic mixture
      network=ml_collections.ConfigDict(dict(features=16, hidden=16, num_layers=2,
                                             first_kernel=7, kernel=3)),
  ))
  config.optimizer = default_optimizer_config(name="adamw", learning_rate=2e-3, warmup_steps=100,
                                              schedule="cosine", weight_decay=0.0,
                                              grad_clip_norm=1.0)
  config.evals = ml_collections.ConfigDict({
      "likelihood": {"kind": "likelihood"},
      "samples": {"kind": "samples", "num_samples": 16, "every": config.get_ref("total_steps")},
  })
  if "diagonal" in variants:
    config.model.architecture = "diagonal_bilstm"
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
    config.model.network.update(features=8, hidden=8, num_layers=1, first_kernel=3)
    config.evals.samples.num_samples = 4
  return config
