"""Accelerator throughput: train-step and inference images/s, jaxvision beside torchvision.

Two models, each in float32 and bfloat16 (``model.dtype``; torch: ``torch.autocast``):

* the R50-FPN Faster R-CNN of ``configs/faster_rcnn_coco.py`` on 800 x 1333 images, 2 per
  device (torchvision: ``fasterrcnn_resnet50_fpn`` with ``min_size=800, max_size=1333``, so
  it does not resize);
* the ``classify_localize`` model with a ResNet-50 (ImageNet stem) on 224 x 224 images, 32
  per device, 1000 classes (torchvision: ``resnet50``, which has no box heads: the locator,
  RoIAlign and box head are jaxvision's extra cost).

jaxvision runs the trainer's jitted, data-parallel train step (state donated, batch sharded
over the devices) and the task's jitted ``eval_outputs``; torch runs one device (CUDA when
available) with SGD. Inputs are synthetic and made before the clock starts (random pixels,
random boxes): the numbers are the models', not an input pipeline's. The first call of each
function (compilation, cuDNN autotuning) is timed separately and excluded.

torchvision is optional: without it (or where its compiled ops cannot run, e.g. a CUDA wheel
beside a CPU torch: no ``nms`` kernel, which its detector needs) its column says why it is
missing and the jaxvision figures still print.

  python benchmarks/accelerator.py                      # the real sizes, both dtypes
  python benchmarks/accelerator.py --steps 2 --dtypes float32 --models classify_localize
  python benchmarks/accelerator.py --detector_config configs/faster_rcnn_shapes.py:quick \\
      --detector_size 64,96 --classify_config configs/classify_localize_shapes.py:quick \\
      --classify_backbone "" --classify_size 32 --classify_batch 2 --steps 1   # tiny (tests)
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any, Callable

from jaxvision import cpu_devices

cpu_devices.configure()  # As jaxvision.train does: one CPU device per core unless XLA_FLAGS says.

# pylint: disable=wrong-import-position
import jax
import numpy as np

from jaxvision import trainer
from jaxvision.parallel import data_sharding, global_batch, replicated
from jaxvision.tasks import get_task

from detection import load_config  # benchmarks/detection.py (this script's directory)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("faster_rcnn", "classify_localize")
DTYPES = ("float32", "bfloat16")
# jaxvision backbone preset -> torchvision constructor of the same network.
TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def timed(function: Callable[[], Any], calls: int, block: Callable[[Any], Any]
          ) -> tuple[float, float]:
  """``(seconds of the first call, seconds per call of the next calls)``."""
  start = time.perf_counter()
  block(function())
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(calls):
    result = function()
  block(result)
  return first, (time.perf_counter() - start) / calls


def synthetic_batch(rng: np.random.Generator, batch_size: int, height: int, width: int,
                    max_boxes: int, num_classes: int, objects: int) -> dict[str, np.ndarray]:
  """Random uint8 images and ``objects`` random valid boxes per image (the rest padding)."""
  corners = rng.uniform(0, 0.6, (batch_size, max_boxes, 2)) * (width, height)
  sizes = rng.uniform(0.1, 0.4, (batch_size, max_boxes, 2)) * (width, height)
  return {"image": rng.integers(0, 256, (batch_size, height, width, 3), dtype=np.uint8),
          "boxes": np.concatenate([corners, corners + sizes], -1).astype(np.float32),
          "labels": rng.integers(0, num_classes, (batch_size, max_boxes)).astype(np.int32),
          "box_valid": np.arange(max_boxes)[None].repeat(batch_size, 0) < objects}


# --- jaxvision ---------------------------------------------------------------------------

def jax_throughput(config, host_batch: dict[str, np.ndarray], mesh, steps: int
                   ) -> dict[str, float]:
  """images/s of the trainer's train step and of ``eval_outputs`` on ``host_batch``."""
  task = get_task(config, mesh)
  batch = global_batch(host_batch, mesh)
  state = trainer.init_state(task, config, host_batch)
  train_step = trainer.make_train_step(task, config)

  def one_train_step():
    nonlocal state
    state, metrics = train_step(state, batch)
    return metrics

  train_compile, train_seconds = timed(one_train_step, steps, jax.block_until_ready)
  eval_step = jax.jit(task.eval_outputs, in_shardings=(replicated(mesh), data_sharding(mesh)),
                      out_shardings=data_sharding(mesh))
  variables = task.inference_variables(state)
  eval_compile, eval_seconds = timed(lambda: eval_step(variables, batch), steps,
                                     jax.block_until_ready)
  images = len(host_batch["image"])
  return {"train": images / train_seconds, "inference": images / eval_seconds,
          "compile_s": train_compile + eval_compile}


# --- torchvision -------------------------------------------------------------------------

def import_torchvision():
  """``(torch, torchvision)``, or ``(None, reason)`` when they cannot be used.

  A torchvision wheel whose compiled ops do not match the installed torch (a CUDA wheel beside
  a CPU torch) fails at import while registering fake kernels of its missing operators; its
  models do not need them, so on that one failure the import is retried without registering
  fakes of missing operators (as tests/torch_reference.py does). Its detector still needs
  ``nms``, so it then fails at its first call and is reported as unavailable.
  """
  try:
    torch = importlib.import_module("torch")
  except ImportError:
    return None, "torch not installed"
  try:
    return torch, importlib.import_module("torchvision")
  except ImportError:
    return None, "torchvision not installed"
  except RuntimeError as e:
    if "does not exist" not in str(e):
      return None, f"torchvision does not import ({e})"
  for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
    del sys.modules[name]
  register_fake = torch.library.register_fake

  def register_fake_if_present(op, *args, **kwargs):
    namespace, _, name = op.partition("::") if isinstance(op, str) else ("", "", "")
    if namespace and not hasattr(getattr(torch.ops, namespace), name):
      return lambda fn: fn
    return register_fake(op, *args, **kwargs)

  torch.library.register_fake = register_fake_if_present
  try:
    return torch, importlib.import_module("torchvision")
  except Exception as e:  # pylint: disable=broad-except
    return None, f"torchvision does not import ({e})"
  finally:
    torch.library.register_fake = register_fake


def torch_throughput(torch, torchvision, model_name: str, backbone: str,
                     host_batch: dict[str, np.ndarray], num_classes: int, dtype: str,
                     steps: int) -> dict[str, float]:
  """images/s of torchvision's model: an SGD train step and inference (``no_grad``)."""
  device = "cuda" if torch.cuda.is_available() else "cpu"
  images = torch.from_numpy(host_batch["image"]).permute(0, 3, 1, 2).float().div(255).to(device)
  height, width = host_batch["image"].shape[1:3]
  if model_name == "faster_rcnn":
    if backbone != "resnet50":
      raise ValueError(f"torchvision's FPN detector preset is ResNet-50, not {backbone}")
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes + 1,
        min_size=min(height, width), max_size=max(height, width))
    targets = [{"boxes": torch.from_numpy(b[v]).to(device),
                "labels": torch.from_numpy(l[v]).long().add(1).to(device)}
               for b, l, v in zip(host_batch["boxes"], host_batch["labels"],
                                  host_batch["box_valid"])]

    def loss():
      return sum(model(list(images), targets).values())

    def infer():
      return model(list(images))
  else:
    model = getattr(torchvision.models, backbone)(weights=None, num_classes=num_classes)
    labels = torch.from_numpy(host_batch["labels"][:, 0]).long().to(device)

    def loss():
      return torch.nn.functional.cross_entropy(model(images), labels)

    def infer():
      return model(images)
  model.to(device)
  optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  def train_step():
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast:
      value = loss()
    value.backward()
    optimizer.step()
    return value

  def inference():
    model.eval()
    with torch.no_grad(), autocast:
      return infer()

  def block(_):
    if device == "cuda":
      torch.cuda.synchronize()

  _, train_seconds = timed(train_step, steps, block)
  _, eval_seconds = timed(inference, steps, block)
  count = len(host_batch["image"])
  return {"train": count / train_seconds, "inference": count / eval_seconds}


# --- main --------------------------------------------------------------------------------

def model_configs(args) -> dict[str, tuple[Any, tuple[int, int], int, str]]:
  """model -> ``(config, (height, width), images per device, backbone)``."""
  detector = load_config(args.detector_config)
  classify = load_config(args.classify_config)
  if args.classify_backbone:
    classify.model.backbone = args.classify_backbone
    classify.model.backbone_kwargs = dict(stem="imagenet")
  classify.model.num_classes = args.classify_classes
  classify.data.image_size = args.classify_size
  height, width = (int(side) for side in args.detector_size.split(","))
  return {"faster_rcnn": (detector, (height, width), args.detector_batch,
                          detector.model.backbone),
          "classify_localize": (classify, (args.classify_size, args.classify_size),
                                args.classify_batch, classify.model.backbone)}


def run(args) -> list[dict[str, Any]]:
  """Measures every (model, dtype); prints and returns one row each."""
  devices = sorted(jax.local_devices(), key=lambda d: d.id)[:args.devices or None]
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  torch, torchvision = (import_torchvision() if args.torchvision == "auto"
                        else (None, "--torchvision off"))
  if torch is not None:
    reference_device = (f"torch {torch.__version__} on "
                        f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
  else:
    reference_device = f"torchvision: {torchvision}"
  print(f"jaxvision: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}); "
        f"{reference_device}")
  print("| model | dtype | batch | image | jax train img/s | torch train img/s | jax/torch "
        "| jax inference img/s | torch inference img/s | jax/torch | jax compile s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  rows = []
  rng = np.random.default_rng(0)
  for model_name, (config, (height, width), per_device, backbone) in model_configs(args).items():
    if model_name not in args.models.split(","):
      continue
    config.batch_size = per_device * len(devices)
    num_classes = config.model.num_classes
    max_boxes = 1 if model_name == "classify_localize" else config.data.max_boxes
    host_batch = synthetic_batch(rng, config.batch_size, height, width, max_boxes, num_classes,
                                 objects=min(max_boxes, 8))
    for dtype in args.dtypes.split(","):
      if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r} in --dtypes; use {DTYPES}.")
      config.model.dtype = dtype
      row = {"model": model_name, "dtype": dtype, "batch": config.batch_size,
             "image": f"{height}x{width}", **jax_throughput(config, host_batch, mesh, args.steps)}
      reference = "n/a"
      if torch is None:
        reference = torchvision
      elif backbone not in TORCHVISION_RESNETS:
        reference = f"no torchvision {backbone}"
      else:
        try:
          row["torch"] = torch_throughput(torch, torchvision, model_name, backbone, host_batch,
                                          num_classes, dtype, args.steps)
        except Exception as e:  # pylint: disable=broad-except
          reference = f"cannot run: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
      rows.append(row)

      def cell(kind):
        if "torch" not in row:
          return reference, "-"
        return f"{row['torch'][kind]:.2f}", f"{row[kind] / row['torch'][kind]:.2f}"

      print(f"| {model_name} | {dtype} | {row['batch']} | {row['image']} | {row['train']:.2f} | "
            f"{' | '.join(cell('train'))} | {row['inference']:.2f} | "
            f"{' | '.join(cell('inference'))} | {row['compile_s']:.0f} |", flush=True)
  for model_name in MODELS:
    by_dtype = {row["dtype"]: row for row in rows if row["model"] == model_name}
    if len(by_dtype) == 2:
      print(f"{model_name}: jaxvision bf16 / f32 train-step speed "
            f"{by_dtype['bfloat16']['train'] / by_dtype['float32']['train']:.2f}, inference "
            f"{by_dtype['bfloat16']['inference'] / by_dtype['float32']['inference']:.2f}")
  return rows


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--dtypes", default=",".join(DTYPES), help="float32 and/or bfloat16")
  parser.add_argument("--steps", type=int, default=5, help="timed calls after the first")
  parser.add_argument("--devices", type=int, default=0, help="local devices to use (0: all)")
  parser.add_argument("--detector_config",
                      default=os.path.join(ROOT, "configs", "faster_rcnn_coco.py"))
  parser.add_argument("--detector_size", default="800,1333", help="height,width")
  parser.add_argument("--detector_batch", type=int, default=2, help="images per device")
  parser.add_argument("--classify_config",
                      default=os.path.join(ROOT, "configs", "classify_localize_shapes.py"))
  parser.add_argument("--classify_backbone", default="resnet50",
                      help="backbone preset with the ImageNet stem ('': the config's own)")
  parser.add_argument("--classify_size", type=int, default=224)
  parser.add_argument("--classify_batch", type=int, default=32, help="images per device")
  parser.add_argument("--classify_classes", type=int, default=1000)
  parser.add_argument("--torchvision", choices=("auto", "off"), default="auto")
  return parser.parse_args(argv)


if __name__ == "__main__":
  run(parse_args())
