"""``configs/faster_rcnn_coco.py``: the full-size R50-FPN trains one step on CPU (no download).

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

import configs.faster_rcnn_coco as coco_config
import quick_training


@pytest.mark.slow
def test_coco_config_full_size_r50_fpn_one_train_step():
  """The real R50-FPN at 1024 x 1024 (COCO's input shapes), one step on a fake batch."""
  config = coco_config.get_config()
  mesh = Mesh(np.asarray(jax.devices()[:1]), (parallel.DATA_AXIS,))
  task = get_task(config, mesh)
  boxes = [[100, 120, 400, 500], [600, 50, 900, 300], [20, 700, 90, 760]]
  batch = quick_training.fake_coco_row(config, boxes, [0, 0, 0], np.random.default_rng(0))
  task.validate_batch(batch)
  state = trainer.init_state(task, config, batch)
  backbone_params = sum(x.size for x in jax.tree.leaves(state["params"]["backbone"]))
  assert 23e6 < backbone_params < 24e6  # ResNet-50 without its classifier: 23.5M
  start = time.perf_counter()
  _, metrics = trainer.make_train_step(task, config)(
      state, parallel.global_batch(batch, mesh))
  assert np.isfinite(float(metrics["loss"]))
  print(f"COCO R50-FPN one train step (compile + run): {time.perf_counter() - start:.1f} s")
