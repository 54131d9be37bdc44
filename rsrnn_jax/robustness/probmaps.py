"""Adversarial probability maps (paper v1 Fig. 5): the probability of a class when the fixation is forced to
every cell of a G×G grid, on targeted adversarial images and on their clean originals."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.train import parallel


def grid_fixations(grid: int):
  """[G·G, 2] fixations (x, y) of the cells of a G×G grid, row-major: cell (i, j) = (x_j, y_i)."""
  c = jnp.linspace(-1.0, 1.0, grid)
  xx, yy = jnp.meshgrid(c, c, indexing="xy")
  return jnp.stack([xx, yy], -1).reshape(-1, 2)


def probability_maps(model, variables, images, classes, *, grid: int = 32, chunk: int = 256, mesh=None):
  """Probability of ``classes`` when the fixation is forced to every cell of a G×G grid.

  images [n,H,W,C], classes [n]. Returns ``{"1": [n,G,G], "1&2": [n,G,G]}``: "1" forces the first fixation
  to the cell and reads step 1; "1&2" keeps the model's own first fixation (the centre, in evaluation) and
  forces the second to the cell, reading step 2. Map cell (i, j) is the fixation (x_j, y_i) with
  x, y = linspace(−1, 1, G) (row = y, down). All n·G² forward passes run in one jitted ``lax.map`` over
  chunks of ``chunk`` (image, cell) pairs; chunks are sharded over ``mesh``'s data axis when they divide.
  """
  return make_probability_map_fn(model, grid=grid, chunk=chunk, mesh=mesh)(
      variables, jnp.asarray(images), jnp.asarray(classes, jnp.int32))


_PROB_MAP_FNS: dict = {}


def make_probability_map_fn(model, *, grid: int = 32, chunk: int = 256, mesh=None):
  """The jitted (variables, images [n,H,W,C], classes [n]) → maps function of :func:`probability_maps`."""
  key = (id(model), grid, chunk, id(mesh))
  if key in _PROB_MAP_FNS and _PROB_MAP_FNS[key][0] is model:
    return _PROB_MAP_FNS[key][1]
  fn = _build_probability_map_fn(model, grid, chunk, mesh)
  _PROB_MAP_FNS[key] = (model, fn)
  return fn


def _build_probability_map_fn(model, grid: int, chunk: int, mesh):
  cells = grid_fixations(grid)
  g2 = grid * grid

  def fn(variables, images, classes):
    n = images.shape[0]
    total = n * g2
    c = min(chunk, total)
    num_chunks = -(-total // c)
    pad = num_chunks * c - total
    img_idx = jnp.pad(jnp.repeat(jnp.arange(n), g2), (0, pad))
    fix = jnp.pad(jnp.tile(cells, (n, 1)), ((0, pad), (0, 0)))
    shard = None
    if mesh is not None and c % mesh.devices.size == 0:
      shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(parallel.DATA_AXIS))

    def body(args):
      idx, f = args
      x = images[idx]
      if shard is not None:
        x, f = jax.lax.with_sharding_constraint((x, f), shard)
      cls = classes[idx]
      zeros = jnp.zeros_like(f)
      one = model.apply(variables, x, num_steps=1, train=False, sample_fixations=False,
                        fixations=f[None], fixation_mask=jnp.array([True]))["logits"][0]
      two = model.apply(variables, x, num_steps=2, train=False, sample_fixations=False,
                        fixations=jnp.stack([zeros, f]), fixation_mask=jnp.array([False, True]))["logits"][1]
      pick = lambda z: jnp.take_along_axis(jax.nn.softmax(z, -1), cls[:, None], -1)[:, 0]
      return pick(one), pick(two)

    p1, p12 = jax.lax.map(body, (img_idx.reshape(num_chunks, c), fix.reshape(num_chunks, c, 2)))
    p1 = p1.reshape(-1)[:total].reshape(n, grid, grid)
    p12 = p12.reshape(-1)[:total].reshape(n, grid, grid)
    return {"1": p1, "1&2": p12}

  return jax.jit(fn)


def adversarial_maps(model, variables, batch: dict, adv_images, clean_correct, *, eps: float, num_images: int,
                     grid: int, chunk: int, mesh=None) -> dict:
  """The probability maps of the targets on ``num_images`` targeted adversarial images of one batch.

  batch: host arrays image, label, mask, target, index; adv_images: the batch's targeted adversarial images;
  clean_correct [B]: clean-correct at T_eval (those come first, then the other real examples). Returns the
  ``prob_maps`` section of the results (the image arrays under ``adv_images`` / ``clean_images``).
  """
  mask = batch["mask"] > 0
  order = [i for i in np.flatnonzero(clean_correct & mask)] + [i for i in np.flatnonzero(~clean_correct & mask)]
  pick = np.asarray(order[:int(num_images)], np.int64)
  x_adv, x_clean = np.asarray(adv_images)[pick], np.asarray(batch["image"])[pick]
  targets, labels = batch["target"][pick], batch["label"][pick]
  to_host = parallel.to_host
  maps_adv = to_host(probability_maps(model, variables, x_adv, targets, grid=grid, chunk=chunk, mesh=mesh))
  maps_clean = to_host(probability_maps(model, variables, x_clean, targets, grid=grid, chunk=chunk, mesh=mesh))
  own = jax.jit(lambda v, x: model.apply(v, x, num_steps=2, train=False, sample_fixations=False))(
      variables, jnp.asarray(x_adv))
  probs = np.asarray(jax.nn.softmax(own["logits"], -1))  # [2, n, K]
  rnd = lambda m: np.round(np.asarray(m, np.float64), 5).tolist()
  return {
      "eps": float(eps), "grid": int(grid), "indices": [int(v) for v in batch["index"][pick]],
      "labels": [int(v) for v in labels], "targets": [int(v) for v in targets],
      "own_fixations": np.asarray(own["fixations"]).transpose(1, 0, 2).round(5).tolist(),  # [n, 2, 2]
      "own_target_prob": [[float(probs[s, i, targets[i]]) for s in range(2)] for i in range(len(pick))],
      "adv": {"1": rnd(maps_adv["1"]), "1&2": rnd(maps_adv["1&2"])},
      "clean": {"1": rnd(maps_clean["1"]), "1&2": rnd(maps_clean["1&2"])},
      "adv_images": x_adv, "clean_images": x_clean,  # arrays: saved to prob_maps.npz, not to JSON
  }
