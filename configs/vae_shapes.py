"""A convolutional VAE on binarized 28 x 28 grey shapes (the likelihood models' data).

  python -m jaxvision.train --config configs/vae_shapes.py --workdir DIR

Held-out numbers on the validation split: ``eval/elbo_nats`` (the ELBO, nats per image),
``eval/nll_nats`` and ``eval/bits_per_dim`` (the IWAE bound with ``model.iwae_samples`` =
500 samples, at the last step only), and pictures: reconstructions, latent interpolations
and samples (decoder means). Binarization: a fixed threshold (> 127), as in
``configs/pixelcnn_shapes.py``, so the two are measured on the same held-out images.

Variants (``:arg``): none (minutes on a 2-core CPU), ``quick`` (tests: a tiny model and
dataset, a few steps).

Sample quality, as for ``configs/dcgan_shapes.py``: with ``features=DIR`` in ``:arg`` (a
trained ``configs/classify_localize_shapes.py`` workdir), ``eval/frechet_distance`` between
1000 samples and 1000 binarized validation images, at the last step::

  python -m jaxvision.train --config configs/vae_shapes.py:features=FEATURES --workdir DIR

The samples are decoder means (grey) unless ``--config.model.sample_pixels=draw`` (binary
pixels drawn from ``p(x | z)``, like the held-out images: the like-for-like distance;
docs/RESULTS.md reports both).
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import config_variant, pixels_data_config


def get_config(arg=None):
  arg, feature_workdir = config_variant(arg, "vae_shapes")
  config = ml_collections.ConfigDict()
  config.task = "vae"
  config.seed = 0
  config.total_steps = 3000
  config.batch_size = 64
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.log_every = 100
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 8

  config.data = pixels_data_config(features=("image",))

  config.model = ml_collections.ConfigDict(dict(
      pixels="binary",  # "binary" (Bernoulli decoder) | "8bit" (discretized logistic)
      binarize="threshold",  # "threshold" (> 127) | "stochastic" (p = value / 255)
      num_classes=0,
      latents=16, features=32, hidden=256,
      kl_warmup_steps=500,  # KL weight 0 -> 1 over these steps (0: always 1)
      free_bits=0.0,  # nats per latent dimension (batch mean) below which KL is not pushed
      iwae_samples=500, iwae_chunk=50,
      sample_pixels="mean",  # samples: decoder means (the grids) | "draw": pixels from p(x | z)
  ))

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=1e-3, warmup_steps=100,
                                              schedule="cosine", weight_decay=0.0)
  config.evals = ml_collections.ConfigDict({
      "elbo": {"kind": "batches"},
      "likelihood": {"kind": "likelihood", "every": config.get_ref("total_steps")},
      "samples": {"kind": "samples", "num_samples": 16},
  })
  if feature_workdir:
    config.evals.frechet = {"kind": "frechet", "feature_workdir": feature_workdir,
                            "num_samples": 1000, "every": config.get_ref("total_steps")}

  if arg == "quick":
    config.total_steps = 90
    config.batch_size = 16
    config.eval_every = 90
    config.checkpoint_every = 30
    config.log_every = 10
    config.num_pictures = 4
    config.optimizer.warmup_steps = 0
    config.optimizer.learning_rate = 5e-3
    config.data.image_size = 16
    config.data.num_train = 256
    config.data.num_validation = 32
    config.data.num_test = 32
    config.model.update(latents=4, features=16, hidden=64, kl_warmup_steps=10,
                        iwae_samples=8, iwae_chunk=4)
    config.evals.samples.num_samples = 4
    if feature_workdir:
      config.evals.frechet.num_samples = 32
  return config
