"""Region proposals' recall on held-out images: selective search (fast, quality) vs an RPN.

For each method, the recall of the objects of the first ``--num_images`` images of a split
at IoU 0.5 / 0.7 / 0.9 (``jaxvision.evaluation.proposals``), over the first ``k`` proposals
of each image for each ``k`` of ``--top_k`` (``all``: every valid one), the mean number of
proposals, and the median seconds per image of making them on this machine.

Selective search runs on the rows the models see (``--config``'s data, letterboxed), one
image at a time in this process (OpenCV with one thread, uncached: the timing is the
search's). The RPN row (``--rpn_workdir``, a trained ``detection`` run with
``proposal_source="rpn"``) takes the restored model's post-NMS test proposals (refined ones
when the model refines them), batch by batch; its time per image is the whole jitted
detector forward (backbone, RPN, RoI head) divided by the batch size.

  python benchmarks/proposals.py [--config configs/fast_rcnn_shapes.py] [--split validation]
      [--num_images 200] [--modes fast,quality] [--top_k 100,all] [--rpn_workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import time

from jaxvision import cpu_devices

cpu_devices.configure()  # As jaxvision.train does: one CPU device per core unless XLA_FLAGS says.

# pylint: disable=wrong-import-position
import jax
import numpy as np

from jaxvision import data as data_lib
from jaxvision.data import proposals as proposals_lib
from jaxvision.evaluation import proposals as recall_lib

from detection import load_config  # benchmarks/detection.py (this script's directory)

FEATURES = ("image", "boxes", "labels", "is_crowd")


def held_out_batches(data_config, split: str, num_images: int, batch_size: int = 8):
  """The first ``num_images`` rows of ``split`` (letterboxed, unaugmented), in batches."""
  features = tuple(f for f in FEATURES if f != "is_crowd" or f in data_config.features)
  pipeline = data_lib.Pipeline(data_config, split, batch_size, seed=0, train=False,
                               process_index=0, process_count=1, features=features)
  return list(pipeline.eval_batches(num_images))


def top_k_values(spec: str) -> list[int | None]:
  return [None if k == "all" else int(k) for k in spec.split(",")]


def recall_rows(name: str, proposals: list[tuple], batches, top_k, seconds) -> list[dict]:
  """One row per ``k``: the recall of the first ``k`` proposals of every image."""
  rows = []
  for k in top_k:
    recall = recall_lib.ProposalRecall()
    for (boxes, valid), batch in zip(proposals, batches):
      if k is not None:
        boxes, valid = boxes[:, :k], valid[:, :k]
      recall.add(boxes, valid, batch["boxes"], batch["box_valid"], batch.get("is_crowd"),
                 batch["example_mask"])
    rows.append({"method": name, "top_k": "all" if k is None else str(k),
                 **recall.result(), "seconds": seconds})
  return rows


def selective_search_rows(mode, batches, max_proposals, min_size, top_k) -> list[dict]:
  proposals, times = [], []
  for batch in batches:
    boxes, valid = [], []
    for image, real in zip(batch["image"], batch["example_mask"]):
      start = time.perf_counter()
      b, v = proposals_lib.selective_search(image, mode=mode, max_proposals=max_proposals,
                                            min_size=min_size)
      if real:
        times.append(time.perf_counter() - start)
      boxes.append(b)
      valid.append(v)
    proposals.append((np.stack(boxes), np.stack(valid)))
  return recall_rows(f"selective search ({mode})", proposals, batches, top_k,
                     float(np.median(times)))


def rpn_rows(workdir: str, split: str, num_images: int, top_k) -> list[dict]:
  from jaxvision import checkpoint  # pylint: disable=import-outside-toplevel
  from jaxvision.tasks import get_task  # pylint: disable=import-outside-toplevel
  config, model, variables = checkpoint.restore_for_inference(workdir)
  if config.model.get("proposal_source", "rpn") != "rpn":
    raise ValueError(f"{workdir} is not a Faster R-CNN run (model.proposal_source="
                     f"{config.model.proposal_source!r}); pass an RPN model's workdir.")
  task = get_task(config)
  forward = jax.jit(lambda v, images: model.apply(v, task.normalize(images), train=False))
  batches = held_out_batches(config.data, split, num_images)
  proposals, times = [], []
  jax.block_until_ready(forward(variables, batches[0]["image"]))  # compile
  for batch in batches:
    start = time.perf_counter()
    outputs = jax.block_until_ready(forward(variables, batch["image"]))
    times.append((time.perf_counter() - start) / len(batch["image"]))
    proposals.append((np.asarray(outputs["proposal_boxes"]),
                      np.asarray(outputs["proposal_valid"])))
  return recall_rows(f"RPN ({os.path.basename(os.path.normpath(workdir))})", proposals,
                     batches, top_k, float(np.median(times)))


def format_table(rows: list[dict]) -> str:
  """The rows of :func:`recall_rows` as a markdown table, then the number of objects."""
  lines = ["| proposals | first k | per image | recall@0.5 | recall@0.7 | recall@0.9 | "
           "mean best IoU | s / image (median) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['method']} | {r['top_k']} | {r['proposals_per_image']:.1f} | "
                 f"{r['recall50']:.3f} | {r['recall70']:.3f} | {r['recall90']:.3f} | "
                 f"{r['mean_best_iou']:.3f} | {r['seconds']:.4f} |")
  return "\n".join(lines) + f"\n\n{int(rows[0]['objects'])} objects."


def print_table(rows: list[dict]) -> None:
  print(format_table(rows))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument("--config", default=os.path.join(root, "configs", "fast_rcnn_shapes.py"),
                      help="whose data (and held-out split) selective search runs on")
  parser.add_argument("--split", default="validation")
  parser.add_argument("--num_images", type=int, default=200)
  parser.add_argument("--modes", default="fast,quality", help="selective search modes ('' none)")
  parser.add_argument("--max_proposals", type=int, default=2000)
  parser.add_argument("--min_size", type=int, default=4)
  parser.add_argument("--top_k", default="100,all", help="proposal budgets, e.g. 100,300,all")
  parser.add_argument("--rpn_workdir", default="", help="a trained Faster R-CNN workdir")
  args = parser.parse_args()

  top_k = top_k_values(args.top_k)
  rows = []
  modes = [m for m in args.modes.split(",") if m]
  if modes:
    batches = held_out_batches(load_config(args.config).data, args.split, args.num_images)
    for mode in modes:
      rows += selective_search_rows(mode, batches, args.max_proposals, args.min_size, top_k)
  if args.rpn_workdir:
    rows += rpn_rows(args.rpn_workdir, args.split, args.num_images, top_k)
  if not rows:
    raise SystemExit("Nothing to measure: give --modes and/or --rpn_workdir.")
  print_table(rows)


if __name__ == "__main__":
  main()
