"""Gated PixelCNN with a discretized logistic mixture on 8-bit CIFAR-10 (TFDS ``cifar10``).

  python -m jaxvision.train --config configs/pixelcnn_cifar10.py --workdir DIR

Needs ``cifar10`` prepared in TFDS ``array_record`` format where the data is
(``$JAXVISION_DATA_DIR`` or ``~/tensorflow_datasets``; or ``--config.data.data_dir``);
nothing is downloaded. Pixels are the 256 levels as they are (no binarization); the output
is PixelCNN++'s mixture of ``model.num_mixtures`` discretized logistics per pixel, its
channels chained R -> G -> B by linear coefficients (Salimans et al. 2017).
``eval/nll_nats`` is the exact test NLL in nats per image, ``eval/bits_per_dim`` over
32 x 32 x 3 values. The papers' anchors (test bits/dim): PixelCNN 3.14, gated PixelCNN
3.03, Row LSTM 3.07, Diagonal BiLSTM 3.00, PixelCNN++ 2.92. ``:softmax`` puts the 256-way
softmax per channel instead; ``:quick`` is a short smoke run.
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import pixels_data_config


def get_config(arg=None):
  variants = set(arg.split(",")) if arg else set()
  unknown = sorted(variants - {"quick", "softmax"})
  if unknown:
    raise ValueError(f"Unknown variant(s) {unknown} of pixelcnn_cifar10; use 'quick', "
                     "'softmax'.")
  config = ml_collections.ConfigDict()
  config.task = "pixelcnn"
  config.seed = 0
  config.total_steps = 100000
  config.batch_size = 32
  config.eval_every = 10000
  config.checkpoint_every = 5000
  config.log_every = 200
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "test"

  config.data = pixels_data_config(name="tfds:cifar10", image_size=32, channels=3,
                                   mean=(0.5,) * 3, std=(0.5,) * 3, features=("image", "label"))

  config.model = ml_collections.ConfigDict(dict(
      architecture="gated_pixelcnn", pixels="8bit", binarize="threshold", num_classes=0,
      output="logistic_mixture",  # "logistic_mixture" (PixelCNN++) | "softmax" (256-way)
      num_mixtures=10,
      sampler="fast",
      network=ml_collections.ConfigDict(dict(features=128, num_layers=15, kernel=5)),
  ))
  if "softmax" in variants:
    config.model.output = "softmax"
    config.model.network.features = 129  # a multiple of the 3 channel groups

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=1e-3, warmup_steps=1000,
                                              schedule="cosine", weight_decay=0.0,
                                              grad_clip_norm=1.0)
  config.evals = ml_collections.ConfigDict({
      "likelihood": {"kind": "likelihood"},
      "samples": {"kind": "samples", "num_samples": 16, "every": config.get_ref("total_steps")},
  })
  if "quick" in variants:
    config.total_steps = 20
    config.eval_every = config.checkpoint_every = 20
    config.log_every = 5
    config.batch_size = 8
    config.model.network.update(features=12, num_layers=2, kernel=3)
    config.model.num_mixtures = 3
    config.evals.samples.num_samples = 2
  return config
