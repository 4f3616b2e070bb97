"""What a *supervised* backbone scores under the self-supervised methods' probe protocol.

The pretext configs (configs/simclr_shapes.py, ...) are judged by the frozen global pool of
their backbone: k-NN and a linear probe on 5000 labelled train images, scored on the held-out
split. This script trains the same backbone, from scratch and with the labels, to classify
the shape from that same global pool (a linear layer on ``pooled``, softmax cross-entropy),
and then scores its frozen ``pooled`` features with the same probes. It calibrates the
self-supervised figures: a probe reading the global pool of this backbone and data cannot
be expected to beat what direct supervision of that pool gives at a comparable budget.

  python benchmarks/probe_ceiling.py [--config configs/simclr_shapes.py] [--steps 3000]
      [--batch_size 128] [--learning_rate 2e-3] [--flip] [--probe_every 1000] [--seed 0]

(``--config configs/context_prediction_shapes.py``: the same backbone on 64 px images.)

Data: the config's dataset (``data``: image size, objects, ``num_train``) read through its
task, every train image once per epoch in a shuffled order, unaugmented unless ``--flip``
(random horizontal flips). Optimizer: AdamW (weight decay 1e-4) with a linear warmup of
``steps // 30`` and cosine decay. One device. Printed at every ``--probe_every`` steps: the
step, the mean training loss and batch accuracy since the last print, the classifier's own
accuracy on the held-out split (BatchNorm in inference mode), and the probes' two
accuracies (``jaxvision.evaluation.probes`` with the config's ``knn`` settings).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("JAXVISION_CPU_DEVICES", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

# pylint: disable=wrong-import-position
from jaxvision import cpu_devices

cpu_devices.configure()

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision import config_files
from jaxvision.evaluation import probes
from jaxvision.models.resnet import build_backbone
from jaxvision.tasks import base


class GlobalPoolClassifier(nn.Module):
  """The config's backbone and a linear classifier on its global pool."""
  backbone: str
  backbone_kwargs: dict
  num_classes: int

  @nn.compact
  def __call__(self, images, train):
    pooled = build_backbone(self.backbone, **self.backbone_kwargs, name="backbone")(
        images, train)["pooled"]
    return nn.Dense(self.num_classes, name="classifier")(pooled), pooled


def load_split(task, split: str, num_examples: int | None) -> tuple[np.ndarray, np.ndarray]:
  """uint8 images and int labels of the first ``num_examples`` images of ``split``."""
  images, labels = [], []
  for batch in task.eval_batches(split, features=("image", "label"),
                                 num_examples=num_examples):
    keep = np.asarray(batch["example_mask"], bool)
    images.append(np.asarray(batch["image"])[keep])
    labels.append(np.asarray(batch["label"])[keep])
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="configs/simclr_shapes.py")
  parser.add_argument("--steps", type=int, default=3000)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--learning_rate", type=float, default=2e-3)
  parser.add_argument("--flip", action="store_true")
  parser.add_argument("--probe_every", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  config = config_files.load_config(args.config)
  task = base.get_task(config)
  probe_settings = config.evals.knn
  start = time.perf_counter()
  train_images, train_labels = load_split(task, "train", None)
  eval_images, eval_labels = load_split(task, config.eval_split, None)
  num_classes = len(task.class_names)
  print(f"data: {len(train_images)} train / {len(eval_images)} {config.eval_split} images of "
        f"{train_images.shape[1:]} ({time.perf_counter() - start:.0f} s)", flush=True)

  model = GlobalPoolClassifier(config.model.backbone, dict(config.model.backbone_kwargs),
                               num_classes)
  variables = model.init(jax.random.key(args.seed), task.normalize(train_images[:2]), False)
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.learning_rate,
                                                max(args.steps // 30, 1), args.steps)
  optimizer = optax.adamw(schedule, weight_decay=1e-4)
  params, batch_stats = variables["params"], variables["batch_stats"]
  opt_state = optimizer.init(params)

  @jax.jit
  def train_step(params, batch_stats, opt_state, images, labels):
    def loss_fn(params):
      (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats},
                                         task.normalize(images), True,
                                         mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, (updates["batch_stats"], jnp.mean(logits.argmax(-1) == labels))
    (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss, accuracy

  @jax.jit
  def infer(params, batch_stats, images):
    return model.apply({"params": params, "batch_stats": batch_stats},
                       task.normalize(images), False)

  def outputs(images):
    chunks = [infer(params, batch_stats, images[i:i + 500]) for i in range(0, len(images), 500)]
    return (np.concatenate([np.asarray(c[0]) for c in chunks]),
            np.concatenate([np.asarray(c[1]) for c in chunks]))

  rng = np.random.default_rng(args.seed)
  order, position = rng.permutation(len(train_images)), 0
  losses, accuracies = [], []
  print("| step | train loss | train batch accuracy | classifier held-out accuracy | k-NN | "
        "linear probe | seconds |\n|---:|---:|---:|---:|---:|---:|---:|", flush=True)
  start = time.perf_counter()
  for step in range(1, args.steps + 1):
    if position + args.batch_size > len(order):
      order, position = rng.permutation(len(train_images)), 0
    index = order[position:position + args.batch_size]
    position += args.batch_size
    images = train_images[index]
    if args.flip:
      flipped = rng.random(len(images)) < 0.5
      images = np.where(flipped[:, None, None, None], images[:, :, ::-1], images)
    params, batch_stats, opt_state, loss, accuracy = train_step(
        params, batch_stats, opt_state, images, train_labels[index])
    losses.append(float(loss))
    accuracies.append(float(accuracy))
    if step % args.probe_every == 0 or step == args.steps:
      logits, held_out = outputs(eval_images)
      _, train_features = outputs(train_images[:probe_settings.num_train])
      probe_labels = train_labels[:probe_settings.num_train]
      knn = probes.knn_accuracy(train_features, probe_labels, held_out, eval_labels,
                                num_classes, k=probe_settings.k,
                                temperature=probe_settings.temperature)
      linear = probes.linear_probe_accuracy(train_features, probe_labels, held_out,
                                            eval_labels, num_classes)
      print(f"| {step} | {np.mean(losses):.3f} | {np.mean(accuracies):.3f} | "
            f"{np.mean(logits.argmax(-1) == eval_labels):.3f} | {knn:.3f} | {linear:.3f} | "
            f"{time.perf_counter() - start:.0f} |", flush=True)
      losses, accuracies = [], []


if __name__ == "__main__":
  main()
