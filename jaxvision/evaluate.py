"""Re-evaluate a workdir's latest checkpoint: ``python -m jaxvision.evaluate --config C --workdir D``.

Runs the config's evaluators (``config.evals``) on the checkpoint, writes
``<workdir>/eval_<split>_step<N>.json`` and pictures, and prints the metrics.
"""

from jaxvision import cpu_devices

cpu_devices.configure()  # Before jax is imported.

# pylint: disable=wrong-import-position
import json
import os

import jax
from absl import app, flags
from ml_collections import config_flags

from jaxvision import checkpoint as checkpoint_lib
from jaxvision import parallel, trainer
from jaxvision.evaluation import evaluators as evaluators_lib
from jaxvision.tasks import get_task

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by jaxvision.train.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval_split).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])


def evaluate_workdir(config, workdir: str, split: str | None = None,
                     step: int | None = None) -> tuple[int, dict[str, float]]:
  """Restores ``workdir``'s checkpoint (latest by default) and runs ``config.evals`` on it.

  ``split`` replaces every evaluator's held-out split. Returns the step and the metrics
  (without the ``eval/`` prefix).
  """
  trainer.validate_config(config)
  parallel.initialize()
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  task = get_task(config, mesh)
  split = split or config.eval_split
  evaluators = evaluators_lib.make_evaluators(task, config, os.path.join(workdir, "pictures"),
                                              split=split)
  checkpointer = checkpoint_lib.Checkpointer(workdir, read_only=True)
  step = checkpointer.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {checkpointer.directory}; train first or check "
                            "the path.")
  example = jax.tree.map(lambda x: x[:1], next(iter(task.eval_batches(split))))
  expected = jax.eval_shape(lambda: task.init_state(jax.random.key(0), example))
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=parallel.replicated(mesh)),
      expected)
  state = checkpointer.restore(abstract, step)
  checkpointer.close()
  metrics = evaluators_lib.run_evaluators(evaluators, state, step, config.seed)
  if parallel.is_main_process():
    with open(os.path.join(workdir, f"eval_{split}_step{step}.json"), "w") as f:
      json.dump({"step": step, "split": split, **metrics}, f, indent=1)
  return step, metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  parallel.initialize()
  step, metrics = evaluate_workdir(_CONFIG.value, _WORKDIR.value, _SPLIT.value, _STEP.value)
  if parallel.is_main_process():
    print(f"step {step} " + " ".join(f"eval/{k}={v:.4f}" for k, v in metrics.items()), flush=True)


if __name__ == "__main__":
  app.run(main)
