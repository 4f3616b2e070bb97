"""SimCLR pretraining on CIFAR-10 through TFDS, probed by k-NN and a linear probe.

  python -m jaxvision.train --config configs/simclr_cifar10.py --workdir DIR

Needs ``cifar10`` prepared in TFDS ``array_record`` format where the data is
(``$JAXVISION_DATA_DIR`` or ``~/tensorflow_datasets``); nothing is downloaded. The backbone
has the CIFAR stem (one 3 x 3 stride-1 convolution, no max-pool), as SimCLR's CIFAR runs.
The view recipe is the paper's CIFAR one: crops of 8-100 % of the image, colour jitter of
strength 0.5, no blur.
"""

import ml_collections

from jaxvision.data import data_config
from jaxvision.optim import default_optimizer_config


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "simclr"
  config.seed = 0
  config.total_steps = 20000
  config.batch_size = 512
  config.eval_every = 5000
  config.checkpoint_every = 2000
  config.log_every = 100
  config.keep_checkpoints = 2
  config.init_from = ""
  config.eval_split = "test"
  config.num_pictures = 8

  config.data = data_config(name="tfds:cifar10", image_size=32, channels=3,
                            features=("image",), flip=False,
                            mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))

  config.model = ml_collections.ConfigDict(dict(
      backbone="resnet18",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="small")),
      hidden=2048, projection_dim=128, temperature=0.5))

  config.augment = ml_collections.ConfigDict(dict(
      crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=True, jitter_probability=0.8,
      jitter_strength=0.5, grayscale_probability=0.2, blur_probability=0.0,
      blur_sigma=(0.1, 2.0)))

  # LARS as in the paper's CIFAR-10 runs (lr 1.0 at batch 512, temperature 0.5) after a
  # 10-epoch warmup (about 1000 steps), cosine decay.
  config.optimizer = default_optimizer_config(name="lars", learning_rate=1.0, warmup_steps=1000,
                                              schedule="cosine", weight_decay=1e-6,
                                              momentum=0.9, trust_coefficient=1e-3)

  config.evals = ml_collections.ConfigDict({
      "test": {"kind": "batches"},
      "knn": {"kind": "knn", "num_train": 5000, "k": 20, "temperature": 0.07},
      "linear_probe": {"kind": "linear_probe", "num_train": 5000},
  })
  if arg:
    raise ValueError(f"Unknown variant {arg!r} of simclr_cifar10; it has none.")
  return config
