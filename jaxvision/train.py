"""Train and evaluate one config: ``python -m jaxvision.train --config configs/X.py --workdir DIR``.

``--config configs/X.py:quick`` selects a variant; ``--config.<field>=value`` overrides a
field (the config is locked: an unknown field is an error that names it). Running the same
command again resumes from the latest checkpoint in ``--workdir``. On a CPU-only machine the
host is split into one device per core first (see ``jaxvision.cpu_devices``).
"""

from jaxvision import cpu_devices

cpu_devices.configure()  # Before jax is imported.

# pylint: disable=wrong-import-position
from absl import app, flags, logging
from ml_collections import config_flags

from jaxvision import parallel, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, pictures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Join a multi-host runtime before anything asks for devices.
  parallel.initialize()
  # Orbax logs every save at INFO; the progress bar and metrics.jsonl say what matters.
  logging.set_verbosity(logging.WARNING)
  metrics = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if parallel.is_main_process():
    print("final " + " ".join(f"eval/{k}={v:.4f}" for k, v in metrics.items()), flush=True)


if __name__ == "__main__":
  app.run(main)
