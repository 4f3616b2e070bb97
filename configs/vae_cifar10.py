"""A convolutional VAE with a discretized logistic mixture decoder on 8-bit CIFAR-10 (TFDS
``cifar10``), the data and measures of ``configs/pixelcnn_cifar10.py``.

  python -m jaxvision.train --config configs/vae_cifar10.py --workdir DIR

Needs ``cifar10`` prepared in TFDS ``array_record`` format where the data is; nothing is
downloaded. The decoder is PixelCNN++'s discretized logistic mixture per pixel
(``model.output="logistic_mixture"``; ``--config.model.output=logistic`` for one discretized
logistic per pixel channel). Test-split numbers: ``eval/elbo_nats`` (ELBO, nats per image),
``eval/nll_nats`` and ``eval/bits_per_dim`` (over 32 x 32 x 3: the IWAE bound with
k = 500, last step only). ``:quick`` is a short smoke run.
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import pixels_data_config


def get_config(arg=None):
  if arg not in (None, "", "quick"):
    raise ValueError(f"Unknown variant {arg!r} of vae_cifar10; use 'quick' or none.")
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

  config.data = pixels_data_config(name="tfds:cifar10", image_size=32, channels=3,
                                   mean=(0.5,) * 3, std=(0.5,) * 3, features=("image",))
  config.model = ml_collections.ConfigDict(dict(
      pixels="8bit",
      output="logistic_mixture",  # "logistic_mixture" (per pixel) | "logistic" (per channel)
      num_mixtures=5,
      binarize="threshold", num_classes=0,
      latents=128, features=64, hidden=1024,
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
  if arg == "quick":
    config.total_steps = 20
    config.eval_every = config.checkpoint_every = 20
    config.log_every = 5
    config.batch_size = 8
    config.model.update(latents=8, features=8, hidden=32, iwae_samples=10, iwae_chunk=10,
                        num_mixtures=2)
  return config
