"""jaxvision.ops vs torchvision.ops on CPU: NMS, batched NMS, RoIAlign, box IoU.

Run from the repository root: ``python benchmarks/ops.py`` (needs torch and torchvision,
``pip install -e ".[bench]"``). Every case first checks that both libraries give the same
result, then times them alternately (one call of each per round, so load from other
processes hits both alike) after compilation, and reports the median per call and the
ratio jaxvision time / torchvision time (below 1: jaxvision is faster).

Threads: XLA's CPU client uses every core; torch is set to the same number of threads
(``torch.set_num_threads(os.cpu_count())``), printed in the header.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

from jaxvision import ops

IOU_THRESHOLD = 0.5


def sparse_boxes(rng, n):
  """Scattered boxes over an image scaled with n so that about half survive NMS at 0.5."""
  side = 1000.0 * np.sqrt(n / 1000)
  centers = rng.uniform(0, side, (n, 2))
  sizes = rng.uniform(80, 240, (n, 2))
  boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], 1)
  return boxes.astype(np.float32), rng.random(n).astype(np.float32)


def dense_boxes(rng, n, per_object=10):
  """Detector-like output: clusters of jittered boxes around n / 10 objects (~1/10 kept)."""
  objects = n // per_object
  centers = rng.uniform(0, 1000, (objects, 2))
  sizes = rng.uniform(20, 200, (objects, 2))
  boxes = np.repeat(np.concatenate([centers - sizes / 2, centers + sizes / 2], 1), per_object, 0)
  jitter = rng.normal(0, 0.05, (n, 4)) * np.tile(np.repeat(sizes, per_object, 0), 2)
  return (boxes + jitter).astype(np.float32), rng.random(n).astype(np.float32)


def time_pair(jax_fn: Callable[[], object], torch_fn: Callable[[], object], rounds: int):
  """Median seconds per call of each, alternating calls; jax results are blocked on."""
  jax.block_until_ready(jax_fn())
  torch_fn()
  jax_times, torch_times = [], []
  for _ in range(rounds):
    start = time.perf_counter()
    jax.block_until_ready(jax_fn())
    jax_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    torch_fn()
    torch_times.append(time.perf_counter() - start)
  return float(np.median(jax_times)), float(np.median(torch_times))


def kept(result) -> np.ndarray:
  indices, valid = (np.asarray(x) for x in result)
  return indices[valid]


def nms_case(rng, n, kind):
  boxes, scores = (sparse_boxes if kind == "sparse" else dense_boxes)(rng, n)
  boxes_t, scores_t = torch.from_numpy(boxes), torch.from_numpy(scores)
  boxes, scores = jnp.asarray(boxes), jnp.asarray(scores)
  run = jax.jit(lambda b, s: ops.nms(b, s, IOU_THRESHOLD, n))
  expected = torchvision.ops.nms(boxes_t, scores_t, IOU_THRESHOLD).numpy()
  np.testing.assert_array_equal(kept(run(boxes, scores)), expected)
  note = f"{len(expected) / n:.0%} kept"
  return (lambda: run(boxes, scores),
          lambda: torchvision.ops.nms(boxes_t, scores_t, IOU_THRESHOLD), note)


def vmapped_nms_case(rng, images=8, n=1000):
  pairs = [dense_boxes(rng, n) for _ in range(images)]
  boxes = jnp.asarray(np.stack([b for b, _ in pairs]))
  scores = jnp.asarray(np.stack([s for _, s in pairs]))
  torch_pairs = [(torch.from_numpy(b), torch.from_numpy(s)) for b, s in pairs]
  run = jax.jit(jax.vmap(lambda b, s: ops.nms(b, s, IOU_THRESHOLD, n)))
  indices, valid = run(boxes, scores)
  for i, (b, s) in enumerate(torch_pairs):
    np.testing.assert_array_equal(kept((indices[i], valid[i])),
                                  torchvision.ops.nms(b, s, IOU_THRESHOLD).numpy())
  return (lambda: run(boxes, scores),
          lambda: [torchvision.ops.nms(b, s, IOU_THRESHOLD) for b, s in torch_pairs],
          "dense; torchvision: loop over images")


def batched_nms_case(rng, n=5000, classes=80, per_object=10):
  """Dense clusters; a cluster's boxes mostly share its object's class (detector-like)."""
  boxes, scores = dense_boxes(rng, n, per_object)
  object_class = np.repeat(rng.integers(0, classes, n // per_object), per_object)
  class_ids = np.where(rng.random(n) < 0.8, object_class, rng.integers(0, classes, n))
  class_ids = class_ids.astype(np.int32)
  boxes_t, scores_t, class_t = (torch.from_numpy(x) for x in (boxes, scores, class_ids))
  boxes, scores, class_ids = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(class_ids)
  run = jax.jit(lambda b, s, c: ops.batched_nms(b, s, c, IOU_THRESHOLD, n))
  expected = torchvision.ops.batched_nms(boxes_t, scores_t, class_t, IOU_THRESHOLD).numpy()
  got = kept(run(boxes, scores, class_ids))
  # torchvision orders exactly tied scores arbitrarily: compare the set and the scores.
  np.testing.assert_array_equal(np.sort(got), np.sort(expected))
  np.testing.assert_array_equal(np.asarray(scores)[got], scores_t.numpy()[expected])
  return (lambda: run(boxes, scores, class_ids),
          lambda: torchvision.ops.batched_nms(boxes_t, scores_t, class_t, IOU_THRESHOLD),
          f"{n} boxes, {len(expected) / n:.0%} kept")


def roi_align_case(rng, rois=512, height=200, width=272, channels=256, stride=4):
  features = rng.standard_normal((height, width, channels)).astype(np.float32)
  corners = rng.uniform(-32, [width * stride, height * stride], (rois, 2))
  sizes = rng.uniform(16, 400, (rois, 2))
  boxes = np.concatenate([corners, corners + sizes], 1).astype(np.float32)
  features_t = torch.from_numpy(features.transpose(2, 0, 1)[None].copy())
  rois_t = torch.from_numpy(np.concatenate([np.zeros((rois, 1), np.float32), boxes], 1))
  features, boxes = jnp.asarray(features), jnp.asarray(boxes)
  run = jax.jit(lambda f, b: ops.roi_align(f, b, (7, 7), 1 / stride, 2, False))
  torch_fn = lambda: torchvision.ops.roi_align(features_t, rois_t, (7, 7), 1 / stride, 2, False)
  np.testing.assert_allclose(run(features, boxes), torch_fn().numpy().transpose(0, 2, 3, 1),
                             atol=1e-4, rtol=0)
  return lambda: run(features, boxes), torch_fn, "NHWC vs NCHW, sampling 2"


def box_iou_case(rng, n=5000):
  boxes, _ = sparse_boxes(rng, n)
  boxes_t = torch.from_numpy(boxes)
  boxes = jnp.asarray(boxes)
  run = jax.jit(ops.box_iou)
  np.testing.assert_allclose(run(boxes, boxes), torchvision.ops.box_iou(boxes_t, boxes_t),
                             atol=1e-6)
  return lambda: run(boxes, boxes), lambda: torchvision.ops.box_iou(boxes_t, boxes_t), ""


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=30, help="timed rounds for fast cases")
  args = parser.parse_args()
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  rng = np.random.default_rng(0)
  cases = [
      ("nms N=1000 sparse", lambda: nms_case(rng, 1000, "sparse"), args.rounds),
      ("nms N=1000 dense", lambda: nms_case(rng, 1000, "dense"), args.rounds),
      ("nms N=5000 sparse", lambda: nms_case(rng, 5000, "sparse"), args.rounds),
      ("nms N=5000 dense", lambda: nms_case(rng, 5000, "dense"), args.rounds),
      ("nms vmap 8 x 1000", lambda: vmapped_nms_case(rng), args.rounds),
      ("batched_nms 80 classes", lambda: batched_nms_case(rng), args.rounds),
      ("roi_align 512 RoIs 7x7, 200x272x256", lambda: roi_align_case(rng), 7),
      ("box_iou 5000 x 5000", lambda: box_iou_case(rng), 7),
  ]
  print(f"machine: {platform.machine()}, {threads} CPU threads ({platform.processor() or 'cpu'}"
        f"), python {platform.python_version()}")
  print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device), "
        f"torch {torch.__version__} (torch.get_num_threads()={torch.get_num_threads()}), "
        f"torchvision {torchvision.__version__}")
  print()
  print("| case | jaxvision ms | torchvision ms | ratio | notes |")
  print("|---|---:|---:|---:|---|")
  for name, build, rounds in cases:
    jax_fn, torch_fn, note = build()
    jax_time, torch_time = time_pair(jax_fn, torch_fn, rounds)
    print(f"| {name} | {jax_time * 1e3:.2f} | {torch_time * 1e3:.2f} | "
          f"{jax_time / torch_time:.2f} | {note} |", flush=True)


if __name__ == "__main__":
  main()
