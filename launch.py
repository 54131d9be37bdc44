"""Train, evaluate or attack a model: flags, then one call into ``rsrnn_jax.run``.

  python launch.py --config=configs/demo.py --workdir=/tmp/demo [--mode=train|eval|attack] [--config.train.num_train_steps=100]

On a cluster, start one process per host; ``jax.distributed.initialize`` runs from the cluster environment
(Slurm, Open MPI) or from --coordinator_address/--num_processes/--process_id. ``--stop_at`` (a job's time limit)
stops a training at its last checkpoint before then; the same command resumes it.

Errors the user can fix (a config file, field, type or value; a workdir that is not a writable directory or is
in use; missing, truncated or corrupt data; a missing, incompatible or damaged checkpoint; a full disk; a
diverged training) end with one line ``error: ...`` on stderr and exit status 2 (docs/faults.md); SIGINT (Ctrl-C)
and SIGTERM end with one line saying what was kept and exit status 130 / 143. ``--debug`` (or RSRNN_DEBUG=1)
prints the traceback too.
"""
import os
import sys
import traceback

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/demo.py or configs/demo.py:model=ff_cnn.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_string("mode", "train", "train | eval | attack (adversarial evaluation of the latest checkpoint: "
                    "WORKDIR/attack_<profile>/; profile via configs/demo.py:attack=paper|strong|adaptive) | verify "
                    "(re-score the saved adversarial sets of the newest attack folder or --config.verify.path)")
flags.DEFINE_string("stop_at", None, "--mode=train only: a time limit, HH:MM, +2h30m or 2026-12-07T15:00 (a job's "
                    "end): training stops at its last checkpoint before then, unevaluated; the same command resumes.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
flags.DEFINE_bool("debug", False, "Show the traceback of every error (also: environment variable RSRNN_DEBUG=1).")
flags.mark_flags_as_required(["config"])
FLAGS = flags.FLAGS
DEBUG_ENV = "RSRNN_DEBUG"


def _debug(argv=()) -> bool:
  return (os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in argv
          or (FLAGS.is_parsed() and FLAGS.debug))


def _fail(message: str, argv=()) -> None:
  if _debug(argv):
    traceback.print_exc()
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(2)  # now: background writer threads of a failed save would print their own tracebacks on the way out


def _interrupted(e) -> None:
  """SIGINT/SIGTERM (rsrnn_jax.workdir.Interrupted): its one line, exit status 130 / 143, no traceback."""
  if _debug():
    traceback.print_exc()
  print(" ".join(str(e).split()), file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(e.exit_code)  # as _fail: no background thread gets to print on the way out


def _innermost_line(exc: BaseException) -> str:
  """The last line of the deepest exception in ``exc``'s chain (config_flags wraps load errors twice)."""
  while exc.__cause__ is not None or exc.__context__ is not None:
    exc = exc.__cause__ or exc.__context__
  lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
  return lines[-1] if lines else type(exc).__name__


def _config_arg(argv) -> str:
  return next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")


def parse_flags(argv):
  """absl's parser, with every failure (unknown field, bad type, missing or broken config file) one line."""
  try:
    rest = FLAGS(argv)
  except flags.Error as e:  # a bad value or type, a missing required flag, an unknown flag
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if "Error whilst parsing config file" in str(e):  # get_config() raised: its message is the last line
      _fail(f"cannot load --config={_config_arg(argv)}: {lines[-1]}", argv)
    if "must have a value other than None" in str(e):
      _fail(f"{lines[0].split(':')[0].removeprefix('flag ').split('=')[0]} is required "
            f"(e.g. --config=configs/demo.py --workdir=workdirs/demo)", argv)
    _fail(e, argv)
  except (KeyError, AttributeError) as e:  # config_flags: --config.<field> that the config does not have
    text = str(e).strip("'\"")
    field = text.split("'")[0]
    given = [a.split("=")[0] for a in argv if a.startswith("--config.") and f".{field}" in a.split("=")[0]]
    hint = text[text.index("Did you mean"):].split("?")[0] + "?" if "Did you mean" in text else \
        "the fields are listed in configs/common.py"
    _fail(f"{given[0] if given else field}: no such config field '{field}' ({hint})", argv)
  except Exception as e:  # noqa: BLE001 - the config file itself failed while parsing an override
    _fail(f"cannot load --config={_config_arg(argv)}: {_innermost_line(e)}", argv)
  try:
    FLAGS.config.get("model")  # config_flags defers a load failure to the first access
  except Exception as e:  # noqa: BLE001 - missing file, syntax error, get_config() raising
    _fail(f"cannot load --config={_config_arg(argv)}: {_innermost_line(e)}", argv)
  return rest


def main(argv):
  del argv
  if FLAGS.debug:
    os.environ[DEBUG_ENV] = "1"
  from rsrnn_jax import workdir
  try:
    with workdir.interruptible():  # SIGINT/SIGTERM → workdir.Interrupted: one line, exit 130 / 143
      _run(FLAGS.mode)
  except workdir.Interrupted as e:
    _interrupted(e)
  except Exception as e:  # noqa: BLE001 - sorted below: user errors get one line, bugs their traceback
    message = workdir.describe_error(e)
    if message is None:
      raise
    _fail(message)


def _run(mode: str) -> None:
  from rsrnn_jax import run  # after flags: XLA_FLAGS may have been set by the caller
  from rsrnn_jax.train import parallel
  run.setup_logging(debug=_debug())
  stop_at = _stop_at(mode, FLAGS.stop_at)
  parallel.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  run.main(FLAGS.config, FLAGS.workdir, mode, **({"stop_at": stop_at} if stop_at is not None else {}))


def _stop_at(mode: str, text: str | None):
  """``--stop_at`` as epoch seconds (None without it); ValueError (one line, exit 2) for any other mode or form."""
  if text is None:
    return None
  if mode != "train":
    raise ValueError(f"--stop_at applies to --mode=train only (got --mode={mode}): drop it")
  from rsrnn_jax.reproduction import deadline
  try:
    return deadline.parse(text)
  except ValueError as e:
    raise ValueError(str(e).replace("--deadline", "--stop_at")) from None


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
