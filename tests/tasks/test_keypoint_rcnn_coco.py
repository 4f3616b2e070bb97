"""``configs/keypoint_rcnn_coco.py``: the full-size R50-FPN Keypoint R-CNN trains one step on
CPU on a fake COCO-shaped batch (no download, no json).

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

import configs.keypoint_rcnn_coco as coco_config
import quick_training


@pytest.mark.slow
def test_coco_config_full_size_keypoint_rcnn_one_train_step():
  """The real R50-FPN + 512-wide keypoint head at 1024 x 1024, 17 person keypoints."""
  config = coco_config.get_config()
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  num_keypoints = config.model.num_keypoints
  assert num_keypoints == len(config.keypoint_sigmas) == 17
  rng = np.random.default_rng(0)
  boxes = [[100, 120, 400, 700], [600, 50, 900, 600], [20, 700, 90, 960]]
  keypoints = np.zeros((1, config.data.max_boxes, num_keypoints, 3), np.float32)
  for i, (x1, y1, x2, y2) in enumerate(boxes):  # points inside each box, visibility 0-2
    keypoints[0, i, :, 0] = rng.uniform(x1, x2, num_keypoints)
    keypoints[0, i, :, 1] = rng.uniform(y1, y2, num_keypoints)
    keypoints[0, i, :, 2] = rng.integers(0, 3, num_keypoints)
  batch = quick_training.fake_coco_row(config, boxes, [0, 0, 0], rng, keypoints=keypoints)
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  head_params = sum(x.size for x in jax.tree.leaves(state["params"]["keypoint_predictor"]))
  # 256 -> 512 then 7 x 512 -> 512 3x3 convs, and the 4x4 transposed conv to 17 maps.
  expected = (9 * 256 * 512 + 512) + 7 * (9 * 512 * 512 + 512) + (16 * 512 * 17 + 17)
  assert head_params == expected
  start = time.perf_counter()
  _, metrics = trainer.make_train_step(task, config)(
      state, parallel.global_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["roi_keypoint"]))
  assert float(metrics["roi_keypoint"]) > 0.0
  print(f"COCO Keypoint R-CNN one train step (compile + run): "
        f"{time.perf_counter() - start:.1f} s")
