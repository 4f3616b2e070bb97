"""Transfer: ``init_from`` a self-supervised run (SimCLR, context prediction, autoencoder) into
``classify_localize`` and the detector; the fine-tuning run starts from the pretext backbone.

Each pretext run is its quick config for two steps, which move its backbone away from any
fresh initialization; the target runs freeze the backbone (``freeze_regex``), so their
saved backbone must equal the source's exactly while their heads train from scratch. The
target takes the source's backbone settings, as a user would on the command line.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxvision import checkpoint, trainer
from jaxvision.tasks import get_task

import configs.autoencoder_shapes as autoencoder_config
import configs.classify_localize_shapes as classify_config
import configs.context_prediction_shapes as context_config
import configs.faster_rcnn_shapes as detection_config
import configs.simclr_shapes as simclr_config

PRETEXT_CONFIGS = {"simclr": simclr_config, "context_prediction": context_config,
                   "autoencoder": autoencoder_config}
# The task's own held-out metrics only (the probes are tested with each task).
ONLY_OWN_METRICS = {"validation": {"kind": "batches"}}


def _two_steps(config, workdir: str, init_from: str = "") -> None:
  config.init_from = init_from
  config.total_steps = config.checkpoint_every = 2
  config.evals = ONLY_OWN_METRICS
  trainer.train_and_evaluate(config, workdir)


def _pretext_run(name: str, directory, **backbone_kwargs):
  config = PRETEXT_CONFIGS[name].get_config("quick")
  config.model.backbone_kwargs.update(backbone_kwargs)
  _two_steps(config, str(directory))
  return config, str(directory)


def _fine_tune_frozen(config, pretext, source: str, workdir: str):
  """Fine-tunes ``config`` (with the pretext's backbone settings) from ``source`` with a
  frozen backbone; returns the source's params, the target's params and the target's fresh
  (not transferred) backbone params."""
  config.model.backbone = pretext.model.backbone
  config.model.backbone_kwargs = dict(pretext.model.backbone_kwargs)
  config.optimizer.freeze_regex = "^backbone/"
  _two_steps(config, workdir, init_from=source)
  _, _, source_variables = checkpoint.restore_for_inference(source)
  _, _, variables = checkpoint.restore_for_inference(workdir)
  task = get_task(config)
  fresh = trainer.init_state(task, config, task.train_batch(0))
  return (source_variables["params"], variables["params"],
          jax.device_get(fresh["params"]["backbone"]))


def _assert_transferred(source_params, params, fresh_backbone) -> None:
  source_backbone = source_params["backbone"]
  jax.tree.map(np.testing.assert_array_equal, source_backbone, params["backbone"])
  # Not trivially equal: a fresh initialization of the target differs from the source.
  assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(fresh_backbone),
                                                    jax.tree.leaves(source_backbone)))
  # The source's heads are not carried over (the target has its own).
  assert not set(params) & (set(source_params) - {"backbone"})


@pytest.fixture(scope="module", params=sorted(PRETEXT_CONFIGS))
def pretext_run(request, tmp_path_factory):
  return _pretext_run(request.param, tmp_path_factory.mktemp(request.param))


def test_pretext_backbone_transfers_into_classify_localize(pretext_run, tmp_path):
  pretext, source = pretext_run
  _assert_transferred(*_fine_tune_frozen(classify_config.get_config("quick"), pretext, source,
                                         str(tmp_path)))


def test_simclr_backbone_transfers_into_the_detector(tmp_path):
  # The FPN detector needs C2 at stride 4: this pretext run uses the ImageNet stem. The
  # detector's state is built and given the backbone as train_and_evaluate does (its
  # fine-tuning run is the classify_localize one above).
  pretext, source = _pretext_run("simclr", tmp_path / "simclr", stem="imagenet")
  config = detection_config.get_config("quick")
  config.model.backbone = pretext.model.backbone
  config.model.backbone_kwargs = dict(pretext.model.backbone_kwargs)
  config.init_from = source
  task = get_task(config)
  state = trainer.init_state(task, config, task.train_batch(0))
  fresh = jax.device_get(state)
  loaded = jax.device_get(trainer.transfer_backbone(task, state, config))
  _, _, source_variables = checkpoint.restore_for_inference(source)
  _assert_transferred(source_variables["params"], loaded["params"], fresh["params"]["backbone"])
  jax.tree.map(np.testing.assert_array_equal, source_variables["batch_stats"]["backbone"],
               loaded["batch_stats"]["backbone"])
  # Everything but the backbone is the detector's own fresh initialization.
  for name in set(fresh["params"]) - {"backbone"}:
    jax.tree.map(np.testing.assert_array_equal, fresh["params"][name], loaded["params"][name])
