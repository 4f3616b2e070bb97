"""The contract between the generic trainer and an experiment family.

A task owns everything that differs between families: its training state and train step,
its data (the source, the preprocessing, the batches) and what can be evaluated on it. The
trainer (``jaxvision.trainer``) knows nothing else: it jits the task's functions with
shardings, guards the loss, logs, checkpoints, resumes and runs the evaluators named in the
config (``jaxvision.evaluation.evaluators``), which call the task's hooks.

* :class:`Task` is the general contract: ``init_state(rng, batch) -> state`` and
  ``train_step(state, batch, rng) -> (state, metrics)`` on any pytree state holding an int32
  ``step``; GANs keep two parameter sets and two optimizer states in it, SimCLR calls
  ``jax.shard_map`` collectives over :attr:`Task.mesh` inside its step.
* :class:`SupervisedTask` is one model, one ``loss_fn`` and one optimizer; its state is
  ``{params, batch_stats, opt_state, step}``.

Tasks register themselves by name (``@register("classify_localize")``) and are looked up from
``config.task``.

Batches are dicts of arrays whose leading axis is the batch. On the host they are numpy
(``uint8`` images, ``float32`` boxes in absolute ``(x1, y1, x2, y2)`` pixels, padded to
``config.data.max_boxes`` with a boolean ``box_valid`` mask); inside jit they are global,
data-sharded ``jax.Array``s.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxvision import data as data_lib
from jaxvision import optim, parallel
from jaxvision.evaluation.base import Evaluator
from jaxvision.models.layers import compute_dtype

Batch = Mapping[str, Any]
Metrics = dict[str, jax.Array]
State = Any  # A pytree of arrays with an int32 scalar ``state["step"]``.
Variables = dict[str, Any]  # Flax variables: ``{"params": ..., "batch_stats": ...}``.

DEFAULT_NETWORK = "model"
# Per-channel normalization of uint8 images when a config predates ``data.mean``/``data.std``.
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.25, 0.25, 0.25)


class Task(abc.ABC):
  """One experiment family: its state and step, its data, its evaluation hooks.

  Attributes:
    config: The run's config.
    mesh: The device mesh the trainer runs on (one ``data`` axis over every device of every
      host). Train steps run under ``jax.jit`` on global arrays; a task that needs
      per-device code with collectives wraps it in ``jax.shard_map(..., mesh=self.mesh)``
      over ``parallel.DATA_AXIS``.
    guarded_metrics: Train metrics the trainer checks: a non-finite value leaves the state
      unchanged and stops the run before anything is written after it.
    networks: Names of the networks a state holds (``inference_variables`` selects one).
    compute_dtypes: The ``config.model.dtype`` values the task's models compute in
      (``"bfloat16"``: mixed precision, parameters stay float32). Others are an error.
    accumulates_gradients: Whether ``train_step`` implements
      ``config.optimizer.accumulate_steps > 1``; if not, such a config is an error.
    compute_dtype: The dtype named by ``config.model.dtype`` (validated).
    accumulate_steps: ``config.optimizer.accumulate_steps`` (validated; 1 without it).
  """

  guarded_metrics: tuple[str, ...] = ("loss",)
  networks: tuple[str, ...] = (DEFAULT_NETWORK,)
  compute_dtypes: tuple[str, ...] = ("float32",)
  accumulates_gradients: bool = False

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
    self.config = config
    self.mesh = mesh if mesh is not None else parallel.make_mesh()
    self._pipelines: dict[tuple, data_lib.Pipeline] = {}
    self.compute_dtype = self._checked_compute_dtype()
    self.accumulate_steps = self._checked_accumulate_steps()

  def _checked_compute_dtype(self):
    name = (self.config.get("model", None) or {}).get("dtype", "float32")
    dtype = compute_dtype(name)  # Raises for a name that is no dtype at all.
    if name not in self.compute_dtypes:
      raise ValueError(f"Task {self.config.get('task')!r} computes in {list(self.compute_dtypes)} "
                       f"only; got model.dtype={name!r}. Mixed precision (bfloat16) is "
                       "implemented for classify_localize and detection.")
    return dtype

  def _checked_accumulate_steps(self) -> int:
    optimizer = self.config.get("optimizer", None)
    steps = optim.accumulate_steps(optimizer) if optimizer is not None else 1
    if steps == 1:
      return steps
    if not self.accumulates_gradients:
      raise ValueError(f"Task {self.config.get('task')!r} has no gradient accumulation (its "
                       "train step does not split the batch); set optimizer.accumulate_steps=1.")
    devices = self.mesh.devices.size
    if self.config.batch_size % (steps * devices):
      raise ValueError(f"config.batch_size={self.config.batch_size} must be a multiple of "
                       f"optimizer.accumulate_steps={steps} x {devices} devices: each update's "
                       f"global batch is split into {steps} micro-batches, each spread over "
                       "every device.")
    return steps

  # --- data ----------------------------------------------------------------------------
  @functools.cached_property
  def source(self) -> data_lib.DataSource:
    """The data source named by ``config.data.name`` (built on first use)."""
    return data_lib.get_source(self.config.data)

  @property
  def class_names(self) -> tuple[str, ...]:
    """Class names from the source's metadata (index = label)."""
    return self.source.metadata.class_names

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """``(H, W, C)`` of the model's input images."""
    size = self.config.data.image_size
    return (size, size, self.config.data.get("channels", 3))

  def preprocess(self, example: data_lib.Example, rng: np.random.Generator | None
                 ) -> dict[str, np.ndarray]:
    """One example -> one fixed-shape row; ``rng`` draws the augmentation (None: none).

    Runs in the pipeline's worker threads, so it must be a pure function of its arguments
    (numpy only). The default is :class:`~jaxvision.data.StandardPreprocess`: letterbox to
    ``data.image_size``, ``data.channels``, random flips when ``data.flip``, objects padded
    to ``data.max_boxes``.
    """
    return self._standard_preprocess(example, rng)

  @functools.cached_property
  def _standard_preprocess(self) -> data_lib.StandardPreprocess:
    return data_lib.StandardPreprocess(self.config.data, self.source.metadata)

  def pipeline(self, split: str, training: bool,
               features: tuple[str, ...] | None = None) -> data_lib.Pipeline:
    """The (cached) pipeline of ``split``.

    Args:
      split: A split of the source.
      training: Shuffled, repeated and augmented (``preprocess`` gets a generator) if True;
        read in order without augmentation if False (evaluation, and the frozen features of a
        train split for k-NN and linear probes).
      features: Which features the rows hold; ``config.data.features`` by default.
    """
    features = tuple(self.config.data.features if features is None else features)
    key = (split, training, features)
    if key not in self._pipelines:
      self._pipelines[key] = data_lib.Pipeline(
          self.config.data, split, self.config.batch_size, self.config.seed, train=training,
          preprocess=self.preprocess, features=features, source=self.source)
    return self._pipelines[key]

  def train_batch(self, step: int) -> dict[str, np.ndarray]:
    """This host's slice of the global training batch for ``step``.

    A pure function of ``(config.seed, step)`` and the process index/count, so a resumed
    run reads exactly the batches an uninterrupted one would.
    """
    return self.pipeline("train", training=True).host_batch(step)

  def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """``train_batch(step)`` for ``step = start_step, start_step + 1, ...``, prefetched."""
    return self.pipeline("train", training=True).iterate(start_step)

  def eval_batches(self, split: str, features: tuple[str, ...] | None = None,
                   num_examples: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """This host's slices of fixed-shape global batches over ``split``, unaugmented.

    Each batch carries a boolean ``example_mask`` (False on padding rows). ``num_examples``
    reads only the first that many examples of the split.
    """
    return self.pipeline(split, training=False, features=features).eval_batches(num_examples)

  def validate_batch(self, batch: Batch) -> None:
    """Raises ``ValueError`` naming the problem for a malformed host batch (pre-compile)."""

  def normalize(self, images: jax.Array) -> jax.Array:
    """uint8 (or [0, 255] float) images -> float32 normalized by ``data.mean``/``data.std``."""
    return normalize_images(images, self.config.data.get("mean", DEFAULT_MEAN),
                            self.config.data.get("std", DEFAULT_STD))

  # --- state and step ------------------------------------------------------------------
  @abc.abstractmethod
  def init_state(self, rng: jax.Array, batch: Batch) -> State:
    """A fresh training state (with an int32 ``step`` of 0); jit-able.

    ``batch`` is an example batch (host numpy, one row) that fixes the input shapes.
    """

  @abc.abstractmethod
  def train_step(self, state: State, batch: Batch, rng: jax.Array) -> tuple[State, Metrics]:
    """One optimization step on a global batch; jit-able; increments ``state["step"]``.

    ``rng`` is ``fold_in(key(config.seed), state["step"])``. Metrics are scalars (means over
    the global batch); they include every name in ``guarded_metrics``.
    """

  # --- networks ------------------------------------------------------------------------
  @property
  @abc.abstractmethod
  def model(self) -> nn.Module:
    """The default network's Flax module. Its backbone submodule is named ``backbone``."""

  def network_module(self, network: str | None = None) -> nn.Module:
    """The Flax module of ``network`` (one of ``networks``; None: the default)."""
    self._check_network(network)
    return self.model

  def inference_variables(self, state: State, network: str | None = None) -> Variables:
    """The Flax variables of ``network`` in ``state`` (None: the default network).

    What ``restore_for_inference`` returns and what evaluation and ``predict`` use. The
    default network is ``config.inference_network`` when the config sets it.
    """
    self._check_network(network)
    variables = {"params": state["params"]}
    if state.get("batch_stats"):
      variables["batch_stats"] = state["batch_stats"]
    return variables

  def default_network(self) -> str:
    return self.config.get("inference_network", None) or self.networks[0]

  def _check_network(self, network: str | None) -> str:
    network = network or self.default_network()
    if network not in self.networks:
      raise ValueError(f"Task {self.config.task!r} has no network {network!r}; its networks "
                       f"are {list(self.networks)}.")
    return network

  def load_backbone(self, state: State, backbone: Variables, where: str) -> State:
    """``state`` with its backbone replaced by ``backbone`` (``{"params", "batch_stats"}``).

    Transfer learning (``config.init_from``). Raises a ValueError naming the first
    mismatching entry when the backbones differ; ``where`` names the source in messages.
    """
    from jaxvision import checkpoint  # Deferred: checkpoint restores through tasks.

    if "backbone" not in state["params"]:
      raise ValueError(f"Task {self.config.task!r} has no 'backbone' to load from {where}.")
    state = dict(state)
    for collection in ("params", "batch_stats"):
      if "backbone" not in state.get(collection, {}):
        continue
      checkpoint.check_compatible(backbone[collection], state[collection]["backbone"], where,
                                  prefix=f"{collection}/backbone")
      state[collection] = {**state[collection], "backbone": backbone[collection]}
    return state

  # --- evaluation hooks ----------------------------------------------------------------
  def eval_outputs(self, variables: Variables, batch: Batch) -> dict[str, jax.Array]:
    """Jit-able predictions for an eval batch; leading axis aligned with the batch.

    Used by the ``batches`` evaluator with :meth:`make_evaluator`.
    """
    raise NotImplementedError(f"Task {self.config.task!r} has no batch evaluation.")

  def make_evaluator(self) -> Evaluator:
    """A fresh evaluator for one pass of ``eval_outputs`` over a split."""
    raise NotImplementedError(f"Task {self.config.task!r} has no batch evaluation.")

  def representation(self, variables: Variables, images: jax.Array,
                     feature: str = "pooled") -> jax.Array:
    """Frozen features ``[B, D]`` of NHWC images for the ``knn`` and ``linear_probe``
    evaluators: the ``backbone`` submodule's output ``feature``, flattened (``pooled``, the
    global average of C5, by default; ``C5`` keeps the spatial layout)."""
    backbone = getattr(self, "backbone_module", None)
    if backbone is None or "backbone" not in variables["params"]:
      raise NotImplementedError(f"Task {self.config.task!r} has no backbone representation.")
    backbone_variables = {name: collection["backbone"] for name, collection in variables.items()
                          if "backbone" in collection}
    features = backbone.apply(backbone_variables, self.normalize(images), train=False)
    if feature not in features:
      raise ValueError(f"The backbone has no feature {feature!r}; it has {sorted(features)}.")
    # Probes fit float32 features whatever the backbone computes in (model.dtype).
    return features[feature].reshape(images.shape[0], -1).astype(jnp.float32)

  def predict(self, variables: Variables, images: jax.Array) -> dict[str, jax.Array]:
    """Notebook inference on NHWC images (uint8 or float32 in [0, 255])."""
    raise NotImplementedError(f"Task {self.config.task!r} has no predict.")

  def write_pictures(self, variables: Variables, batch: Mapping[str, np.ndarray],
                     outputs: Mapping[str, np.ndarray], directory: str, step: int) -> list[str]:
    """Writes PNGs of held-out predictions into ``directory``; returns their paths.

    Called on process 0 only, with host (numpy) inputs: it must not run jitted code on
    global arrays (the other processes would not join it).
    """
    del variables, batch, outputs, directory, step
    return []


class MultiNetworkTask(Task):
  """A task with several networks (a GAN's generator and discriminator), each with its own
  parameters (and optimizer state) under its own key of the state.

  Subclasses set ``networks`` and, in ``__init__``, ``self.modules``: ``{name: Flax module}``
  for each of them; the state holds ``state[name]["params"]``. They write their own
  ``init_state`` and ``train_step`` (one optax transform per network, alternating updates).
  """

  modules: dict[str, nn.Module]

  @property
  def model(self) -> nn.Module:
    return self.modules[self.default_network()]

  def network_module(self, network: str | None = None) -> nn.Module:
    return self.modules[self._check_network(network)]

  def inference_variables(self, state: State, network: str | None = None) -> Variables:
    return {"params": state[self._check_network(network)]["params"]}


class SupervisedTask(Task):
  """One model, one loss, one optimizer: ``state = {params, batch_stats, opt_state, step}``.

  Subclasses define the model (``model``, ``init_variables``) and ``loss_fn``; the step is
  ``value_and_grad`` + the optimizer of ``config.optimizer``, with gradient accumulation
  over micro-batches when ``optimizer.accumulate_steps > 1`` (see :mod:`jaxvision.optim`).
  """

  accumulates_gradients = True

  @abc.abstractmethod
  def init_variables(self, rng: jax.Array, batch: Batch) -> Variables:
    """``model.init`` on an example batch; returns the Flax variables dict."""

  @abc.abstractmethod
  def loss_fn(self, params: Any, model_state: dict[str, Any], batch: Batch,
              rng: jax.Array) -> tuple[jax.Array, tuple[Metrics, dict[str, Any]]]:
    """Training loss. Returns ``(loss, (metrics, new_model_state))``; jit-able.

    ``model_state`` holds the non-parameter collections (``batch_stats``); metrics are
    scalars averaged over the global batch.
    """

  @functools.cached_property
  def tx(self) -> optax.GradientTransformation:
    """The optimizer of ``config.optimizer`` (its masks are evaluated on the parameters)."""
    return optim.make_optimizer(self.config.optimizer, self.config.total_steps)

  @functools.cached_property
  def learning_rate(self) -> optax.Schedule:
    return optim.learning_rate_schedule(self.config.optimizer, self.config.total_steps)

  def init_state(self, rng, batch):
    variables = self.init_variables(rng, batch)
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {}),
            "opt_state": self.tx.init(variables["params"]),
            "step": jnp.zeros((), jnp.int32)}

  def _micro_step(self, params, batch_stats, opt_state, batch, rng):
    """Gradient of ``batch`` and the optimizer's update: one step, or one micro-step of an
    accumulated one (``optax.MultiSteps`` updates nothing until the last micro-batch)."""
    grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
    (loss, (metrics, model_state)), grads = grad_fn(
        params, {"batch_stats": batch_stats}, batch, rng)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), model_state.get("batch_stats", batch_stats),
            opt_state, grads, {**metrics, "loss": loss})

  def train_step(self, state, batch, rng):
    carry = (state["params"], state["batch_stats"], state["opt_state"])
    steps = self.accumulate_steps
    if steps == 1:
      params, batch_stats, opt_state, grads, metrics = self._micro_step(*carry, batch, rng)
    else:
      # Micro-batch j is rows j, j + k, j + 2k, ...: every device's contiguous block of the
      # sharded global batch (a multiple of k rows) holds its share of each micro-batch, so
      # every micro-step runs on all devices without moving rows between them.
      micro_batches = jax.tree.map(
          lambda x: jnp.swapaxes(x.reshape((x.shape[0] // steps, steps) + x.shape[1:]), 0, 1),
          batch)

      def micro_step(carry, inputs):
        *carry, grad_sum = carry
        index, micro_batch = inputs
        *carry, grads, metrics = self._micro_step(*carry, micro_batch,
                                                  jax.random.fold_in(rng, index))
        return (*carry, jax.tree.map(jnp.add, grad_sum, grads)), metrics

      zeros = jax.tree.map(jnp.zeros_like, state["params"])
      (params, batch_stats, opt_state, grad_sum), metrics = jax.lax.scan(
          micro_step, (*carry, zeros), (jnp.arange(steps), micro_batches))
      # Means over the micro-batches: the global batch's, for means over its examples.
      metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
      grads = jax.tree.map(lambda g: g / steps, grad_sum)  # what MultiSteps applied
    new_state = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state,
                 "step": state["step"] + 1}
    metrics = {**metrics, "grad_norm": optax.global_norm(grads),
               "learning_rate": self.learning_rate(state["step"])}
    return new_state, metrics


_REGISTRY: dict[str, Callable[..., Task]] = {}


def register(name: str):
  """Class decorator: makes a task available as ``config.task = name``."""

  def wrap(cls):
    if name in _REGISTRY:
      raise ValueError(f"Task {name!r} is registered twice.")
    _REGISTRY[name] = cls
    return cls

  return wrap


def get_task(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None) -> Task:
  """Builds the task named by ``config.task`` on ``mesh`` (default: every device)."""
  import jaxvision.tasks  # noqa: F401  (registers the built-in tasks)

  name = config.task
  if name not in _REGISTRY:
    raise ValueError(f"Unknown config.task {name!r}; known tasks: {sorted(_REGISTRY)}.")
  return _REGISTRY[name](config, mesh)


def validate_images(images: Any, image_shape: tuple[int, int, int], where: str) -> None:
  """Raises a ValueError unless ``images`` is an NHWC batch of ``image_shape`` images.

  Accepts uint8 (as stored) or float32 in [0, 255].
  """
  shape, dtype = tuple(np.shape(images)), np.dtype(images.dtype)
  height, width, channels = image_shape
  if len(shape) != 4:
    raise ValueError(f"{where}: images must be a batch [B, H, W, {channels}] (rank 4), got "
                     f"shape {shape}.")
  if shape[1:] != tuple(image_shape):
    raise ValueError(f"{where}: images must be [B, {height}, {width}, {channels}] for this "
                     f"config (data.image_size={height}, data.channels={channels}), got "
                     f"{shape}; resize them first.")
  if dtype not in (np.uint8, np.float32):
    raise ValueError(f"{where}: images must be uint8 or float32 in [0, 255], got {dtype}.")


def normalize_images(images: jax.Array, mean=DEFAULT_MEAN, std=DEFAULT_STD) -> jax.Array:
  """uint8 or [0, 255] float images -> float32 ``(x / 255 - mean) / std`` per channel."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (images.astype(np.float32) / 255.0 - mean) / std
