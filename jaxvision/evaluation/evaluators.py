"""Evaluators that run on the training state, chosen by name in ``config.evals``.

``config.evals`` maps a name to the settings of one evaluator; every evaluator has its own
kind, split and schedule::

  config.evals = {
      "validation": {"kind": "batches"},                       # the task's own metrics
      "knn": {"kind": "knn", "k": 20, "temperature": 0.07},    # eval/knn_accuracy
      "probe": {"kind": "linear_probe", "every": 1500},        # eval/linear_probe_accuracy
  }

Settings every kind takes: ``kind``; ``split`` (default ``config.eval_split``); ``every``
(steps; default ``config.eval_every``; the last step is always evaluated); ``at_start``
(also evaluate the fresh state of a new run, step 0); ``network`` (which of the task's
networks, default its ``inference_network``); ``prefix`` (prepended to the metric names).
Kinds (each documents its own settings):

* ``batches``: the split streamed through the task's ``eval_outputs`` and ``make_evaluator``
  (COCO AP, mIoU, accuracy, ...), with pictures of the first batch.
* ``knn`` / ``linear_probe``: frozen, unaugmented features (``task.representation``: the
  backbone's output ``feature``, ``pooled`` by default) of the first ``num_train`` examples
  of ``train_split`` and of the held-out split (``num_eval``: all by default), with the
  image-level ``label``; a weighted cosine k-NN or a multinomial logistic regression fitted
  on them (:mod:`jaxvision.evaluation.probes`).
* ``likelihood``: ``task.log_likelihood(variables, batch, rng)`` (nats per example) over the
  split: ``nll_nats`` and ``bits_per_dim``.
* ``samples``: a grid of ``task.sample(variables, rng, num_samples)`` in ``pictures/``.
* ``frechet``: ``frechet_distance`` between ``num_samples`` images of ``task.sample`` and as
  many held-out images of the split, in the feature space of the fixed network of another run
  (``feature_workdir``, required); see :class:`FrechetEvaluator`.

Evaluators run on every process (their jitted functions are collectives over the global
mesh); only process 0 writes files. Each builds its jitted functions once, so evaluating
again compiles nothing. Tasks may register further kinds with :func:`register_evaluator`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxvision import checkpoint, parallel, viz
from jaxvision.evaluation import frechet, probes

COMMON_SETTINGS = {"kind": None, "split": None, "every": None, "at_start": False,
                   "network": None, "prefix": ""}
# The stream of evaluation randomness: ``fold_in(key(seed), EVAL_STREAM)``; train steps fold
# in their step number, which never reaches it.
EVAL_STREAM = 2**31 - 1

_KINDS: dict[str, type[StateEvaluator]] = {}


def register_evaluator(kind: str):
  """Class decorator: makes an evaluator available as ``config.evals.<name>.kind = kind``."""

  def wrap(cls):
    if kind in _KINDS:
      raise ValueError(f"Evaluator kind {kind!r} is registered twice.")
    _KINDS[kind] = cls
    return cls

  return wrap


class StateEvaluator(abc.ABC):
  """One configured evaluation of a training state.

  Attributes:
    DEFAULTS: This kind's own settings and their defaults (besides ``COMMON_SETTINGS``).
  """

  DEFAULTS: dict[str, Any] = {}

  def __init__(self, name: str, task: Any, settings: ml_collections.ConfigDict,
               picture_dir: str | None):
    self.name = name
    self.task = task
    self.settings = settings
    self.picture_dir = picture_dir
    self.replicated = parallel.replicated(task.mesh)
    self.data_sharding = parallel.data_sharding(task.mesh)

  def variables(self, state: Any) -> dict[str, Any]:
    return self.task.inference_variables(state, self.settings.network)

  @abc.abstractmethod
  def run(self, state: Any, step: int, rng: jax.Array) -> dict[str, float]:
    """Metric name (before ``prefix``) -> value; the same on every process."""


@register_evaluator("batches")
class BatchesEvaluator(StateEvaluator):
  """The task's own metrics: ``eval_outputs`` on every batch of the split, reduced by
  ``make_evaluator()``; process 0 draws the first batch (``pictures``: True)."""

  DEFAULTS = {"pictures": True}

  def __init__(self, *args):
    super().__init__(*args)
    self._outputs = jax.jit(self.task.eval_outputs,
                            in_shardings=(self.replicated, self.data_sharding),
                            out_shardings=self.data_sharding)

  def run(self, state, step, rng):
    del rng
    variables = self.variables(state)
    evaluator = self.task.make_evaluator()
    for index, host_batch in enumerate(self.task.eval_batches(self.settings.split)):
      self.task.validate_batch(host_batch)
      outputs = parallel.to_host(self._outputs(variables,
                                               parallel.global_batch(host_batch, self.task.mesh)))
      labels = {k: v for k, v in host_batch.items() if k != "image"}
      evaluator.add(outputs, parallel.to_host(parallel.global_batch(labels, self.task.mesh)))
      if (index == 0 and self.picture_dir and self.settings.pictures
          and parallel.is_main_process()):
        rows = len(host_batch["image"])  # Process 0's rows come first in the global batch.
        self.task.write_pictures(variables, host_batch,
                                 jax.tree.map(lambda x: x[:rows], outputs), self.picture_dir,
                                 step)
    return evaluator.result()


class _Features:
  """Frozen features and labels of a split, shared by the probe evaluators of a run.

  The features of one (network, split, count, label) are computed once per step, however
  many probes read them.
  """

  def __init__(self, task: Any):
    self.task = task
    self._representation = jax.jit(
        task.representation, static_argnums=2,
        in_shardings=(parallel.replicated(task.mesh), parallel.data_sharding(task.mesh)),
        out_shardings=parallel.data_sharding(task.mesh))
    self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

  def __call__(self, variables: dict[str, Any], step: int, network: str | None, feature: str,
               split: str, num_examples: int | None, label: str
               ) -> tuple[np.ndarray, np.ndarray]:
    key = (step, network, feature, split, num_examples, label)
    if key not in self._cache:
      self._cache = {k: v for k, v in self._cache.items() if k[0] == step}
      features, labels = [], []
      for host_batch in self.task.eval_batches(split, features=("image", label),
                                               num_examples=num_examples):
        images = parallel.global_batch({"image": host_batch["image"]}, self.task.mesh)["image"]
        batch_features = parallel.to_host(self._representation(variables, images, feature))
        rest = parallel.to_host(parallel.global_batch(
            {"label": host_batch[label], "mask": host_batch["example_mask"]}, self.task.mesh))
        features.append(batch_features[rest["mask"]])
        labels.append(rest["label"][rest["mask"]])
      self._cache[key] = (np.concatenate(features).astype(np.float32), np.concatenate(labels))
    return self._cache[key]


class _ProbeEvaluator(StateEvaluator):
  """Base of the frozen-feature probes: features of ``train_split`` and of ``split``."""

  DEFAULTS = {"train_split": "train", "num_train": 5000, "num_eval": None, "label": "label",
              "feature": "pooled"}

  def __init__(self, *args, features: _Features):
    super().__init__(*args)
    self._features = features

  def train_and_eval_features(self, state, step):
    variables = self.variables(state)
    s = self.settings
    train = self._features(variables, step, s.network, s.feature, s.train_split, s.num_train,
                           s.label)
    held_out = self._features(variables, step, s.network, s.feature, s.split, s.num_eval,
                              s.label)
    return train, held_out

  def num_classes(self, *labels: np.ndarray) -> int:
    return max(len(self.task.class_names), int(max(l.max() for l in labels)) + 1)


@register_evaluator("knn")
class KnnEvaluator(_ProbeEvaluator):
  """``knn_accuracy``: weighted cosine k-NN (``k``, ``temperature``) on frozen features."""

  DEFAULTS = {**_ProbeEvaluator.DEFAULTS, "k": 20, "temperature": 0.07}

  def run(self, state, step, rng):
    del rng
    (train_x, train_y), (test_x, test_y) = self.train_and_eval_features(state, step)
    accuracy = probes.knn_accuracy(train_x, train_y, test_x, test_y,
                                   self.num_classes(train_y, test_y), k=self.settings.k,
                                   temperature=self.settings.temperature)
    return {"knn_accuracy": accuracy}


@register_evaluator("linear_probe")
class LinearProbeEvaluator(_ProbeEvaluator):
  """``linear_probe_accuracy``: multinomial logistic regression (``l2``,
  ``max_iterations``) fitted on frozen train features, scored on the held-out split."""

  DEFAULTS = {**_ProbeEvaluator.DEFAULTS, "l2": 1e-4, "max_iterations": 500}

  def run(self, state, step, rng):
    del rng
    (train_x, train_y), (test_x, test_y) = self.train_and_eval_features(state, step)
    accuracy = probes.linear_probe_accuracy(
        train_x, train_y, test_x, test_y, self.num_classes(train_y, test_y),
        l2=self.settings.l2, max_iterations=self.settings.max_iterations)
    return {"linear_probe_accuracy": accuracy}


@register_evaluator("likelihood")
class LikelihoodEvaluator(StateEvaluator):
  """``nll_nats`` (mean negative log-likelihood per example, in nats) and ``bits_per_dim``
  of ``task.log_likelihood(variables, batch, rng) -> [B]`` (log p of each example, nats) over
  the split; the rng (e.g. for importance-weighted bounds) differs per batch."""

  def __init__(self, *args):
    super().__init__(*args)
    self._log_likelihood = jax.jit(
        self.task.log_likelihood,
        in_shardings=(self.replicated, self.data_sharding, self.replicated),
        out_shardings=self.data_sharding)

  def run(self, state, step, rng):
    variables = self.variables(state)
    total, count, dims = 0.0, 0, None
    for index, host_batch in enumerate(self.task.eval_batches(self.settings.split)):
      self.task.validate_batch(host_batch)
      batch = parallel.global_batch(host_batch, self.task.mesh)
      log_p = parallel.to_host(self._log_likelihood(variables, batch,
                                                    jax.random.fold_in(rng, index)))
      mask = parallel.to_host(batch["example_mask"])
      total -= float(np.sum(log_p[mask], dtype=np.float64))
      count += int(mask.sum())
      dims = math.prod(host_batch["image"].shape[1:])
    nll = total / max(count, 1)
    return {"nll_nats": nll, "bits_per_dim": nll / (dims * math.log(2))}


@register_evaluator("samples")
class SamplesEvaluator(StateEvaluator):
  """A grid of ``num_samples`` images from ``task.sample(variables, rng, num_samples)``
  (uint8 or [0, 255] float ``[N, H, W, C]``), written by process 0 as
  ``pictures/step_<step>_<name>.png``; no metrics."""

  DEFAULTS = {"num_samples": 16, "columns": 4}

  def __init__(self, *args):
    super().__init__(*args)
    self._sample = jax.jit(self.task.sample, static_argnums=2,
                           in_shardings=(self.replicated, self.replicated),
                           out_shardings=self.replicated)

  def run(self, state, step, rng):
    images = parallel.to_host(self._sample(self.variables(state), rng,
                                           self.settings.num_samples))
    if self.picture_dir and parallel.is_main_process():
      images = np.clip(np.round(images), 0, 255).astype(np.uint8)
      if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
      viz.save_image_grid(list(images), os.path.join(
          self.picture_dir, f"step_{step:07d}_{self.name}.png"), columns=self.settings.columns)
    return {}


def to_feature_images(images: jax.Array, image_shape: tuple[int, int, int]) -> jax.Array:
  """``[N, h, w, c]`` images in [0, 255] -> float32 ``[N, H, W, C]`` (``image_shape``) for a
  feature network: clipped to [0, 255], grey repeated to 3 channels (or RGB averaged to grey),
  then resized bilinearly (antialiased when shrinking) to ``H x W``. Both sides of a Frechet
  distance go through it, so it changes both alike."""
  height, width, channels = image_shape
  images = jnp.clip(jnp.asarray(images, jnp.float32), 0.0, 255.0)
  if images.shape[-1] != channels:
    if images.shape[-1] == 1 and channels == 3:
      images = jnp.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 3 and channels == 1:
      images = jnp.mean(images, axis=-1, keepdims=True)
    else:
      raise ValueError(f"Cannot turn {images.shape[-1]}-channel images into the feature "
                       f"network's {channels} channels.")
  if images.shape[1:3] != (height, width):
    images = jax.image.resize(images, (images.shape[0], height, width, channels), "bilinear")
  return images


@register_evaluator("frechet")
class FrechetEvaluator(StateEvaluator):
  """``frechet_distance``: the Frechet distance (:func:`frechet.frechet_distance`) between
  Gaussians fitted to features of generated and of held-out images.

  Settings: ``feature_workdir`` (required: the workdir of a run whose network gives the
  features, e.g. ``configs/classify_localize_shapes.py`` trained on the same shapes; its
  latest checkpoint, via ``checkpoint.restore_for_inference``), ``feature_network`` (that
  run's network; default its default), ``feature`` (what its task's ``representation``
  returns: the backbone's global pool, ``pooled``, by default), ``num_samples`` (generated
  images; also the number of held-out images read from the start of ``split``, fewer if the
  split is smaller), ``sample_batch`` (images per ``task.sample`` call).

  Samples come from ``task.sample(variables, rng, n)`` (float ``[n, H, W, C]`` in [0, 255]);
  held-out images are the split's rows as the task reads them (binarized for binary-pixel
  models). Both are converted to the feature network's input by :func:`to_feature_images`
  (e.g. 28 x 28 grey -> 3 channels, resized to its ``data.image_size``) and normalized by its
  own task. The held-out statistics are computed once per run.
  """

  DEFAULTS = {"feature_workdir": "", "feature_network": None, "feature": "pooled",
              "num_samples": 1000, "sample_batch": 250}

  def __init__(self, *args):
    super().__init__(*args)
    s = self.settings
    where = f"config.evals.{self.name}"
    if not s.feature_workdir:
      raise ValueError(
          f"{where}.feature_workdir is not set: the Frechet distance needs the workdir of a "
          "trained run whose network gives the features (e.g. python -m jaxvision.train "
          "--config configs/classify_localize_shapes.py --workdir FEATURES, then "
          f"{where}.feature_workdir=FEATURES), or remove this evaluator.")
    if not os.path.isdir(checkpoint.checkpoint_directory(s.feature_workdir)):
      raise FileNotFoundError(f"{where}.feature_workdir={s.feature_workdir!r} is not a workdir "
                              "with checkpoints; train the feature run first.")
    if not isinstance(s.num_samples, int) or s.num_samples < 2:
      raise ValueError(f"{where}.num_samples must be an integer >= 2, got {s.num_samples!r}.")
    if not isinstance(s.sample_batch, int) or s.sample_batch < 1:
      raise ValueError(f"{where}.sample_batch must be a positive integer, got "
                       f"{s.sample_batch!r}.")
    from jaxvision.tasks import get_task  # Deferred, as in checkpoint.py: the task registry.

    config, _, variables = checkpoint.restore_for_inference(s.feature_workdir,
                                                            network=s.feature_network)
    # The fixed network runs on one local device of every process, on whole host arrays.
    device = jax.local_devices()[0]
    self._feature_variables = jax.device_put(variables, device)
    feature_task = get_task(config, jax.sharding.Mesh(np.asarray([device]),
                                                      (parallel.DATA_AXIS,)))
    image_shape = feature_task.image_shape
    channels, feature_channels = self.task.image_shape[-1], image_shape[-1]
    if channels != feature_channels and {channels, feature_channels} != {1, 3}:
      raise ValueError(f"{where}: the feature run's images have {feature_channels} channels, "
                       f"this task's {channels}; use a feature run with 1 or 3.")
    features = lambda v, images: feature_task.representation(
        v, to_feature_images(images, image_shape), s.feature)
    try:
      jax.eval_shape(features, self._feature_variables,
                     jax.ShapeDtypeStruct((1, *self.task.image_shape), jnp.float32))
    except NotImplementedError as error:
      raise ValueError(f"{where}.feature_workdir={s.feature_workdir!r}: {error} Use a run "
                       "with a backbone (e.g. classify_localize).") from error
    self._features = jax.jit(features)
    self._sample = jax.jit(self.task.sample, static_argnums=2,
                           in_shardings=(self.replicated, self.replicated),
                           out_shardings=self.replicated)
    self._held_out: tuple[np.ndarray, np.ndarray] | None = None

  def features(self, images: np.ndarray) -> np.ndarray:
    """Feature-network features ``[N, D]`` (float64) of host images ``[N, h, w, c]``."""
    return np.asarray(jax.device_get(self._features(self._feature_variables, images)),
                      np.float64)

  def held_out_statistics(self) -> tuple[np.ndarray, np.ndarray]:
    if self._held_out is None:
      features = []
      for host_batch in self.task.eval_batches(self.settings.split, features=("image",),
                                               num_examples=self.settings.num_samples):
        rows = parallel.to_host(parallel.global_batch(
            {"image": host_batch["image"], "mask": host_batch["example_mask"]},
            self.task.mesh))
        features.append(self.features(rows["image"])[rows["mask"]])
      self._held_out = frechet.feature_statistics(np.concatenate(features))
    return self._held_out

  def run(self, state, step, rng):
    variables = self.variables(state)
    count = self.settings.num_samples
    batch = min(self.settings.sample_batch, count)
    features = []
    for index in range(-(-count // batch)):
      images = parallel.to_host(self._sample(variables, jax.random.fold_in(rng, index), batch))
      features.append(self.features(images))
    samples = frechet.feature_statistics(np.concatenate(features)[:count])
    return {"frechet_distance": frechet.frechet_distance(*samples,
                                                         *self.held_out_statistics())}


@dataclasses.dataclass
class ScheduledEvaluator:
  """An evaluator with its name and schedule."""
  name: str
  evaluator: StateEvaluator
  every: int
  at_start: bool
  prefix: str

  def due(self, step: int, total_steps: int) -> bool:
    return step % self.every == 0 or step == total_steps


def eval_settings(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  """``config.evals`` completed with defaults (validated), or the default single evaluator:
  the task's ``batches`` on ``config.eval_split`` every ``config.eval_every`` steps."""
  evals = config.get("evals", None)
  if evals is None:
    evals = {"eval": {"kind": "batches"}}
  elif not isinstance(evals, (dict, ml_collections.ConfigDict)) or not evals:
    raise ValueError(f"config.evals must map names to evaluator settings, got {evals!r}.")
  settings = {}
  for name, given in dict(evals).items():
    given = dict(given)
    kind = given.get("kind")
    if kind not in _KINDS:
      raise ValueError(f"config.evals.{name}.kind is {kind!r}; known kinds: {sorted(_KINDS)}.")
    defaults = {**COMMON_SETTINGS, "split": config.eval_split, "every": config.eval_every,
                **_KINDS[kind].DEFAULTS}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
      raise ValueError(f"Unknown settings {unknown} in config.evals.{name} (kind {kind!r}); "
                       f"known: {sorted(defaults)}.")
    merged = ml_collections.ConfigDict({**defaults, **given})
    if not isinstance(merged.every, int) or merged.every <= 0:
      raise ValueError(f"config.evals.{name}.every must be a positive integer, got "
                       f"{merged.every!r}.")
    settings[name] = merged
  return settings


def make_evaluators(task: Any, config: ml_collections.ConfigDict, picture_dir: str | None,
                    split: str | None = None) -> list[ScheduledEvaluator]:
  """The evaluators of ``config.evals`` for ``task``, built once per run.

  ``split`` (optional) replaces every evaluator's held-out split (``jaxvision.evaluate
  --split``).
  """
  features = _Features(task)
  scheduled = []
  for name, settings in eval_settings(config).items():
    if split is not None:
      settings.split = split
    cls = _KINDS[settings.kind]
    kwargs = {"features": features} if issubclass(cls, _ProbeEvaluator) else {}
    evaluator = cls(name, task, settings, picture_dir, **kwargs)
    scheduled.append(ScheduledEvaluator(name, evaluator, settings.every, settings.at_start,
                                        settings.prefix))
  return scheduled


def evaluation_rng(seed: int, step: int) -> jax.Array:
  """The rng of the evaluations at ``step`` (independent of every train step's)."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), EVAL_STREAM), step)


def run_evaluators(evaluators: list[ScheduledEvaluator], state: Any, step: int, seed: int,
                   which: Callable[[ScheduledEvaluator], bool] = lambda e: True
                   ) -> dict[str, float]:
  """Runs the evaluators ``which`` selects on ``state``; returns their prefixed metrics."""
  metrics: dict[str, float] = {}
  origin: dict[str, str] = {}
  rng = evaluation_rng(seed, step)
  for index, scheduled in enumerate(evaluators):
    if not which(scheduled):
      continue
    result = scheduled.evaluator.run(state, step, jax.random.fold_in(rng, index))
    for key, value in result.items():
      key = scheduled.prefix + key
      if key in metrics:
        raise ValueError(f"config.evals.{scheduled.name} and config.evals.{origin[key]} both "
                         f"report {key!r}; give one of them a 'prefix'.")
      metrics[key], origin[key] = float(value), scheduled.name
  return metrics
