"""DCGAN on 28 x 28 grey shapes (8-bit), the likelihood models' images before binarization.

  python -m jaxvision.train --config configs/dcgan_shapes.py --workdir DIR

Pictures: a grid of generator samples at every evaluation (``pictures/*_samples.png``);
``restore_for_inference(workdir)`` gives the generator (``network="discriminator"``: the
discriminator). Variants (``:arg``): none (minutes on a 2-core CPU), ``quick`` (tests).

Sample quality: ``eval/frechet_distance`` at every evaluation, the Frechet distance between
1000 generated and 1000 validation images in the pooled backbone features of a fixed network
trained on the same shapes (the ``frechet`` evaluator); only when a feature run is named with
``features=DIR`` in ``:arg``, so the plain command needs no other run::

  python -m jaxvision.train --config configs/classify_localize_shapes.py --workdir FEATURES
  python -m jaxvision.train --config configs/dcgan_shapes.py:features=FEATURES --workdir DIR

(``quick,features=FEATURES`` for the quick variant.) The feature run sees 64 x 64 colour
renderings of the shapes; generated and held-out 28 x 28 grey images are both repeated to 3
channels and resized to 64 x 64 before its backbone.
"""

import ml_collections

from jaxvision.optim import default_optimizer_config
from jaxvision.tasks.generative import config_variant, pixels_data_config


def get_config(arg=None):
  arg, feature_workdir = config_variant(arg, "dcgan_shapes")
  config = ml_collections.ConfigDict()
  config.task = "dcgan"
  config.seed = 0
  config.total_steps = 3000
  config.batch_size = 64
  config.eval_every = 500
  config.checkpoint_every = 1000
  config.log_every = 100
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "validation"
  config.inference_network = "generator"

  config.data = pixels_data_config(features=("image",))
  config.model = ml_collections.ConfigDict(dict(
      latents=32, generator_features=32, discriminator_features=32))
  # The DCGAN recipe (Radford et al. 2016): Adam, learning rate 2e-4, beta1 = 0.5.
  config.optimizer = default_optimizer_config(name="adamw", learning_rate=2e-4, b1=0.5,
                                              schedule="constant", weight_decay=0.0)
  config.discriminator_optimizer = default_optimizer_config(
      name="adamw", learning_rate=2e-4, b1=0.5, schedule="constant", weight_decay=0.0)
  config.evals = ml_collections.ConfigDict({
      "samples": {"kind": "samples", "network": "generator", "num_samples": 16},
  })
  if feature_workdir:
    config.evals.frechet = {"kind": "frechet", "network": "generator",
                            "feature_workdir": feature_workdir, "num_samples": 1000}
  if arg == "quick":
    config.total_steps = 20
    config.batch_size = 16
    config.eval_every = 20
    config.checkpoint_every = 10
    config.log_every = 5
    config.data.image_size = 16
    config.data.num_train = 256
    config.data.num_validation = 32
    config.data.num_test = 32
    config.model.update(latents=8, generator_features=8, discriminator_features=8)
    config.evals.samples.num_samples = 4
    if feature_workdir:
      config.evals.frechet.num_samples = 32
  return config
