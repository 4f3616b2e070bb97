"""Re-evaluate a workdir's latest checkpoint: ``python -m jaxvision.evaluate --config C --workdir D``.

Writes ``<workdir>/eval_<split>_step<N>.json`` and pictures, and prints the metrics.
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
from jaxvision.tasks import get_task

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "A workdir written by jaxvision.train.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval_split).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["config", "workdir"])


def evaluate_workdir(config, workdir: str, split: str | None = None,
                     step: int | None = None) -> tuple[int, dict[str, float]]:
  """Restores ``workdir``'s checkpoint (latest by default) and evaluates ``split``."""
  trainer.validate_config(config)
  parallel.initialize()
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  task = get_task(config)
  split = split or config.eval_split
  state, _, step = checkpoint_lib.restore_replicated(
      checkpoint_lib.checkpoint_directory(workdir), parallel.replicated(mesh), step)
  example = jax.tree.map(lambda x: x[:1], next(iter(task.eval_batches(split))))
  expected = jax.eval_shape(lambda: task.init_variables(jax.random.key(0), example))
  checkpoint_lib.check_compatible(state["params"], expected["params"], workdir, prefix="params")
  metrics = trainer.evaluate(task, trainer.variables_of(state), mesh, split,
                             os.path.join(workdir, "pictures"), step)
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
