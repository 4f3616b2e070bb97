"""Classification + localization of one shape per image (the embedded shapes dataset).

  python -m jaxvision.train --config configs/classify_localize_shapes.py --workdir DIR
  python -m jaxvision.train --config configs/classify_localize_shapes.py:quick --workdir DIR

Variants (``:arg``): none (the default run, minutes on a 2-core CPU), ``quick`` (tests: a
tiny model and dataset, a few steps).
"""

import ml_collections

from jaxvision.data import shapes_data_config
from jaxvision.optim import default_optimizer_config


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.task = "classify_localize"
  config.seed = 0
  config.total_steps = 2000
  config.batch_size = 64
  config.eval_every = 500
  config.checkpoint_every = 500
  config.log_every = 50
  config.keep_checkpoints = 3
  config.init_from = ""
  config.eval_split = "validation"
  config.num_pictures = 16

  config.data = shapes_data_config(image_size=64, min_objects=1, max_objects=1, max_boxes=1)

  config.model = ml_collections.ConfigDict(dict(
      backbone="resnet_small",
      backbone_kwargs=ml_collections.ConfigDict(dict(stem="stride2", width=16)),
      neck_channels=32, hidden=256,
      roi_feature="C2",  # The backbone feature RoIAlign pools inside the located box (stride 2).
      box_loss="l2",  # "l2" | "smooth_l1" | "giou", on boxes normalized by the image size.
      class_loss_weight=1.0, box_loss_weight=10.0,
      regularizer="none",  # "none" | "frobenius" | "l21" | "trace" on W = [W_class | W_box].
      regularizer_weight=1e-4,
      dtype="float32"))  # compute dtype: "float32" | "bfloat16" (params stay float32)

  config.optimizer = default_optimizer_config(name="adamw", learning_rate=2e-3, warmup_steps=100,
                                              schedule="cosine", weight_decay=1e-4)

  # The task's metrics at every eval_every; the frozen backbone's k-NN and linear-probe
  # accuracy on the shape classes (5000 unaugmented train images, the self-supervised
  # protocol) for the random init (step 0) and the trained model (the last step).
  config.evals = ml_collections.ConfigDict({
      "validation": {"kind": "batches"},
      "knn": {"kind": "knn", "num_train": 5000, "k": 20, "temperature": 0.07,
              "every": config.get_ref("total_steps"), "at_start": True},
      "linear_probe": {"kind": "linear_probe", "num_train": 5000,
                       "every": config.get_ref("total_steps"), "at_start": True},
  })

  if arg == "quick":
    config.total_steps = 6
    config.batch_size = 16
    config.eval_every = 6
    config.checkpoint_every = 3
    config.log_every = 2
    config.optimizer.warmup_steps = 0
    config.num_pictures = 4
    config.data.num_train = 128
    config.data.num_validation = 48
    config.data.num_test = 48
    config.model.backbone = "resnet_tiny"
    config.model.backbone_kwargs.width = 8
    config.model.neck_channels = 8
    config.model.hidden = 32
    # The probes on the whole (tiny) train split, at the end only.
    config.evals.knn.num_train = config.evals.linear_probe.num_train = 128
    config.evals.knn.at_start = config.evals.linear_probe.at_start = False
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of classify_localize_shapes; use 'quick' or none.")
  return config
