"""Clean evaluation: accuracy at every step 1..T_eval over the whole eval split, a plot and a fixation figure."""
from __future__ import annotations

import functools
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax import checkpoints, configlib, data, parallel, train, viz, writers
from rsrnn_jax.models import has_fixations

log = logging.getLogger(__name__)


def load_model(config, workdir: str):
  """Restores the latest checkpoint of ``workdir`` (or ``config.eval.checkpoint_path``) for ``config``.

  Returns (model, state, info, mesh). Refuses, with a one-line error, a checkpoint of another model.
  """
  configlib.validate(config)
  info = data.dataset_info(config.data)
  model, _ = train.model_from_config(config, info)
  mesh = parallel.make_mesh(config.num_devices)
  directory, step = checkpoints.locate(workdir, config.eval.checkpoint_path)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}; train first (--mode=train) or set "
                            f"--config.eval.checkpoint_path")
  mgr = checkpoints.manager(workdir, config, create=False, directory=directory)
  step = mgr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"no checkpoints in {directory}; train first (--mode=train)")
  checkpoints.check_compatible(mgr, checkpoints.metadata(config, info), step)
  with jax.set_mesh(mesh):
    state = train.replicated_state(model, config, info.image_shape, jax.random.key(0), mesh)
    state = checkpoints.restore(mgr, step, state)
  log.info("restored step %d from %s", step, directory)
  return model, state, info, mesh


def predict(model, variables, images, *, num_steps: int, **kwargs):
  """Deterministic forward pass (argmax fixations, centre start): the model's outputs dict."""
  return model.apply(variables, images, num_steps=num_steps, train=False, **kwargs)


def saccade_stats(fixations, mask, image_size: int):
  """Per step t → t+1: summed saccade length (pixels) and number of saccades longer than one pixel."""
  moves = jnp.linalg.norm(jnp.diff(fixations, axis=0), axis=-1) * (image_size - 1) / 2.0  # [T-1,B]
  return jnp.sum(moves * mask[None], axis=1), jnp.sum((moves > 1.0) * mask[None], axis=1)


def _eval_step(variables, batch, *, model, num_steps):
  out = predict(model, variables, batch["image"], num_steps=num_steps)
  stats = {"correct": train.per_step_correct(out["logits"], batch["label"], batch["mask"]),
           "count": jnp.sum(batch["mask"])}
  if "fixations" in out:
    stats["saccade_px"], stats["saccades_over_1px"] = saccade_stats(out["fixations"], batch["mask"],
                                                                    batch["image"].shape[1])
  return stats


def accuracy_per_step(model, variables, config, mesh, *, num_steps: int, max_examples: int = 0):
  """Clean accuracy at every step over the eval split (or its first ``max_examples``).

  Returns (accuracy [T], number of examples, saccade statistics or {} for models without fixations).
  """
  step_fn = jax.jit(functools.partial(_eval_step, model=model, num_steps=num_steps))
  batches = data.eval_batches(config.data, global_batch_size=config.eval.batch_size,
                              process_index=jax.process_index(), process_count=jax.process_count(),
                              max_examples=max_examples or None)
  totals = None
  for batch in batches:
    stats = jax.device_get(step_fn(variables, parallel.shard_batch(batch, mesh)))
    totals = stats if totals is None else jax.tree_util.tree_map(lambda a, b: a + b, totals, stats)
  count = float(totals["count"])
  saccades = {}
  if "saccade_px" in totals:
    saccades = {"mean_saccade_px": [float(v) for v in totals["saccade_px"] / count],
                "fraction_moving": [float(v) for v in totals["saccades_over_1px"] / count]}
  return np.asarray(totals["correct"]) / max(count, 1.0), int(count), saccades


def evaluate(config, workdir: str) -> dict:
  model, state, info, mesh = load_model(config, workdir)
  num_steps = int(config.eval.num_glimpses)
  variables = train.variables_of(state)
  with jax.set_mesh(mesh):
    acc, count, saccades = accuracy_per_step(model, variables, config, mesh, num_steps=num_steps,
                                             max_examples=int(config.eval.max_examples))
  results = {"step": int(jax.device_get(state.step)), "num_examples": count,
             "train_glimpses": int(config.train.num_glimpses), "eval_glimpses": num_steps,
             "accuracy_per_step": [float(a) for a in acc], "model": config.model.name,
             "saccades": saccades,  # per step t→t+1: mean length (px) and fraction of moves > 1 px
             "config": config.to_dict()}
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
      json.dump(results, f, indent=1, default=str)
    viz.plot_accuracy_per_step({config.model.name: acc}, os.path.join(out_dir, "accuracy_per_step.png"),
                               train_glimpses=int(config.train.num_glimpses))
    if has_fixations(config.model):
      figure_fixations(model, variables, config, os.path.join(out_dir, "fixations.png"))
    writers.MetricWriter(workdir, filename="eval.jsonl").write(
        results["step"], {"accuracy_last": acc[-1], "accuracy_train_T": acc[min(len(acc), int(config.train.num_glimpses)) - 1]},
        accuracy_per_step=results["accuracy_per_step"])
    log.info("eval accuracy per step: %s", " ".join(f"{a:.4f}" for a in acc))
  return results


def figure_fixations(model, variables, config, path: str, num_steps: int | None = None):
  """Fixation trajectories and retinal glimpses on the first test images.

  Runs on one process: the replicated variables are copied to the host first, so no collective is needed.
  """
  variables = jax.device_get(variables)
  n = int(config.eval.num_figure_images)
  batch = next(data.eval_batches(config.data, global_batch_size=n, max_examples=n))
  images = jnp.asarray(batch["image"])
  num_steps = num_steps or min(int(config.eval.num_glimpses), 8)
  out = jax.jit(functools.partial(predict, model, num_steps=num_steps))(variables, images)
  fix = np.asarray(out["fixations"])  # [T,B,2]
  logits = np.asarray(out["logits"])
  sampler = model.sampler
  glimpses = np.stack([np.asarray(sampler.glimpses(images, jnp.asarray(fix[t]))[0]) for t in range(num_steps)])
  viz.plot_fixations(np.asarray(images), fix, glimpses, path, labels=batch["label"],
                     predictions=np.argmax(logits[-1], -1))
