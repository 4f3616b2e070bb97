"""``configs/mask_rcnn_coco.py``: the full-size R50-FPN Mask R-CNN trains one step on CPU on
a fake COCO-shaped batch (no download, no json).

In its own file so that pytest-xdist (``--dist loadfile``) can run it beside the other
detection tests.
"""

import time

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jaxvision import parallel, trainer
from jaxvision.tasks import get_task

import configs.mask_rcnn_coco as coco_config
import quick_training


@pytest.mark.slow
def test_coco_config_full_size_mask_rcnn_one_train_step():
  """The real R50-FPN + 256-wide mask head at 1024 x 1024, 80 classes, 28 x 28 masks."""
  config = coco_config.get_config()
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  size, max_boxes = config.data.image_size, config.data.max_boxes
  boxes = [[100, 120, 400, 500], [600, 50, 900, 300], [20, 700, 90, 760]]
  masks = np.zeros((1, max_boxes, size, size), np.uint8)
  for i, (x1, y1, x2, y2) in enumerate(boxes):  # an ellipse inside each box
    ys, xs = np.ogrid[:size, :size]
    masks[0, i] = ((((xs + 0.5 - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2
                    + ((ys + 0.5 - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2) <= 1)
  batch = quick_training.fake_coco_row(config, boxes, [0, 17, 79], np.random.default_rng(0),
                                       masks=masks,
                                       area=masks.sum(axis=(2, 3)).astype(np.float32))
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  head_params = sum(x.size for x in jax.tree.leaves(state["params"]["mask_head_module"]))
  # Four 256 -> 256 3x3 convs, the 2x2 transposed conv, the 1x1 conv to 80 class maps.
  expected = 4 * (9 * 256 * 256 + 256) + (4 * 256 * 256 + 256) + (256 * 80 + 80)
  assert head_params == expected
  start = time.perf_counter()
  _, metrics = trainer.make_train_step(task, config)(
      state, parallel.global_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["roi_mask"]))
  assert float(metrics["roi_mask"]) > 0.0
  print(f"COCO Mask R-CNN one train step (compile + run): {time.perf_counter() - start:.1f} s")
