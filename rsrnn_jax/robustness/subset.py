"""The attacked subset: the first ``attack.num_examples`` eval examples as batches with per-example targets
and indices, and sub-batches of the first examples (for the checks that run on fewer)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax import data
from rsrnn_jax.attacks import core
from rsrnn_jax.train import parallel


def example_targets(target_seed: int, indices, labels, num_classes: int):
  """Per-example targets, uniform over the other classes, from key fold_in(key(target_seed), index)."""
  base = jax.random.key(int(target_seed))
  indices = jnp.asarray(indices, jnp.uint32)
  labels = jnp.asarray(labels, jnp.int32)
  one = lambda i, y: core.random_targets(jax.random.fold_in(base, i), y[None], num_classes)[0]
  return np.asarray(jax.vmap(one)(indices, labels))


def load_subset(config, info, mesh):
  """The first attack.num_examples eval examples as host batches with targets and indices."""
  a = config.attack
  parallel.local_batch_size(int(a.batch_size), mesh)
  p_index, p_count = jax.process_index(), jax.process_count()
  local = int(a.batch_size) // p_count
  batches = []
  for j, b in enumerate(data.eval_batches(config.data, global_batch_size=int(a.batch_size),
                                          process_index=p_index, process_count=p_count,
                                          max_examples=int(a.num_examples) or None)):
    first = j * int(a.batch_size) + p_index * local
    index = np.arange(first, first + local, dtype=np.int64)
    b = dict(b)
    b["index"] = index.astype(np.int32)
    b["target"] = example_targets(int(a.target_seed), index, b["label"], info.num_classes).astype(np.int32)
    b["label"] = b["label"].astype(np.int32)
    batches.append(b)
  if not batches:
    raise ValueError("the eval split is empty: nothing to attack")
  return batches


def first_examples(batches_np, n: int, mesh):
  """Sharded batches holding (about) the first ``n`` examples: whole batches, then the first rows of the next
  one (rounded up to a multiple of the device count)."""
  ndev = mesh.devices.size
  left = n
  for b in batches_np:
    if left <= 0:
      return
    rows = len(b["mask"])
    if left < rows:
      rows = min(rows, -(-left // ndev) * ndev)
    sub = {k: np.asarray(v)[:rows] for k, v in b.items()}
    yield parallel.shard_batch({k: sub[k] for k in ("image", "label", "mask")}, mesh)
    left -= int((sub["mask"] > 0).sum()) * jax.process_count()
