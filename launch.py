"""Train, evaluate or attack a model: flags, then one call into ``rsrnn_jax.run``.

  python launch.py --config=configs/demo.py --workdir=/tmp/demo [--mode=train|eval|attack] [--config.train.num_train_steps=100]

On a cluster, start one process per host; ``jax.distributed.initialize`` runs from the cluster environment
(Slurm, Open MPI) or from --coordinator_address/--num_processes/--process_id.
"""
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py or configs/demo.py:model=ff_cnn.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_string("mode", "train", "train | eval | attack (adversarial evaluation of the latest checkpoint: "
                    "WORKDIR/attack_<profile>/; profile via configs/demo.py:attack=paper|strong)")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from rsrnn_jax import run  # after flags: XLA_FLAGS may have been set by the caller
  from rsrnn_jax.train import parallel
  run.setup_logging()
  try:
    parallel.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    run.main(FLAGS.config, FLAGS.workdir, FLAGS.mode)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
