"""Data parallelism: one mesh axis ``data`` over every device of every process.

The successor of ``pmap``: parameters are replicated, batches are sharded along ``data``, and ``jax.jit``
partitions the computation (gradients are averaged over the global batch by construction, BatchNorm statistics
are global). The same code runs on 1 CPU, N GPUs, or M hosts after :func:`maybe_initialize_distributed`.
"""
from __future__ import annotations

import logging
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from rsrnn_jax.data.pipeline import local_batch_size as local_batch

DATA_AXIS = "data"

log = logging.getLogger(__name__)


def detect_cluster(environ=None) -> str | None:
  """The cluster manager that started this process as one of several, or None (a single process).

  ``slurm``: inside an ``srun`` step with more than one task (the variables JAX's Slurm detection reads; a batch
  script that runs ``python`` directly has no step variables and stays single-process). ``ompi``: ``mpirun`` with
  more than one rank. ``tpu``: a Cloud TPU VM (JAX finds its pod peers itself).
  """
  env = os.environ if environ is None else environ
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
  if all(k in env for k in slurm) and int(env["SLURM_NTASKS"]) > 1:
    return "slurm"
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "ompi"
  if "TPU_WORKER_ID" in env:
    return "tpu"
  return None


def maybe_initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                                 process_id: int | None = None) -> bool:
  """Calls ``jax.distributed.initialize`` when given a coordinator or launched under a cluster manager.

  Explicit arguments (the ``--coordinator_address/--num_processes/--process_id`` flags) take precedence;
  otherwise JAX's cluster auto-detection fills in everything when :func:`detect_cluster` finds Slurm, Open MPI
  or a TPU pod (``JAX_COORDINATOR_PORT`` overrides the port JAX derives from the Slurm job id). On CPU the
  cross-process collectives are gloo (JAX's default ``jax_cpu_collectives_implementation``). Must run before
  anything touches a JAX device. Returns True when the process is part of a multi-process job.
  """
  if coordinator_address:
    if num_processes is None or process_id is None:
      raise ValueError("--coordinator_address needs --num_processes and --process_id too")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  elif num_processes not in (None, 1) or process_id not in (None, 0):
    raise ValueError("--num_processes/--process_id need --coordinator_address (host:port of process 0)")
  elif detect_cluster() is not None:
    jax.distributed.initialize()  # JAX's own detection fills in address, count, id, local devices
  else:
    return False
  log.info("process %d of %d processes: %d local / %d global devices (%s)", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count(), jax.default_backend())
  return True


def make_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
  """A 1-D ``data`` mesh over all devices (``num_devices=0``) or over the first ``num_devices``."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise ValueError(f"config.num_devices={num_devices} but only {len(devices)} devices are visible")
    if jax.process_count() > 1 and num_devices != len(devices):
      raise ValueError("config.num_devices must be 0 (all devices) in a multi-process job")
    devices = devices[:num_devices]
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                       devices=devices)


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def shard_batch(batch: dict, mesh) -> dict:
  """Per-process numpy batch → global jax.Arrays sharded over ``data`` (a jax.Array already on a device, e.g.
  the GPU-decoded images of ``config.data.decoder='dali'``, is moved there without a trip through the host)."""
  sharding = batch_sharded(mesh)
  def put(v):
    if isinstance(v, jax.Array) and jax.process_count() == 1:
      return jax.device_put(v, sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(v))
  return {k: put(v) for k, v in batch.items()}


def local_batch_size(global_batch_size: int, mesh) -> int:
  """Checks that the global batch splits evenly over processes and ``mesh``'s devices; returns the per-process
  size (:func:`rsrnn_jax.data.local_batch_size` for this process)."""
  return local_batch(global_batch_size, jax.process_index(), jax.process_count(), mesh.devices.size)


def to_host(tree):
  """numpy copies of (possibly sharded, multi-process) arrays: the global values on every process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)
  return jax.device_get(tree)
