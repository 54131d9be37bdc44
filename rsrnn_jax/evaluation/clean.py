"""Clean evaluation: accuracy at every step 1..T_eval over the whole eval split, a plot and a fixation figure.

Multi-label data (``coco_multilabel``): instead of the accuracy, mAP and CP/CR/CF1/OP/OR/OF1 at every step
(:mod:`rsrnn_jax.evaluation.multilabel`, threshold: sigmoid probability > 0.5), from the logits of every eval example.
"""
from __future__ import annotations

import functools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax import configlib, data
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.train import checkpoints
from rsrnn_jax.train import loop as train_loop
from rsrnn_jax.evaluation import multilabel, scanpath
from rsrnn_jax.train import parallel
from rsrnn_jax.train import losses as train_losses
from rsrnn_jax.train import state as train_state
from rsrnn_jax.report import figures as viz
from rsrnn_jax.train import writers
from rsrnn_jax.models import is_recurrent, predict

log = logging.getLogger(__name__)


def load_model(config, workdir: str):
  """Restores the latest checkpoint of ``workdir`` (or ``config.eval.checkpoint_path``) for ``config``.

  Returns (model, state, info, mesh). Refuses, with a one-line error, a checkpoint of another model.
  """
  configlib.validate(config)
  directory, step = checkpoints.locate(workdir, config.eval.checkpoint_path)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}; train first (--mode=train) or set "
                            f"--config.eval.checkpoint_path")
  mgr = checkpoints.manager(workdir, config, create=False, directory=directory)
  if step is None and not mgr.all_steps():
    raise FileNotFoundError(f"no checkpoints in {directory}; train first (--mode=train)")
  checkpoints.check_before_data(config, directory, step)
  info = data.dataset_info(config.data)
  model, _ = train_state.model_from_config(config, info)
  mesh = parallel.make_mesh(config.num_devices)
  meta = checkpoints.metadata(config, info)
  checkpoints.check_compatible(mgr, meta, step)
  with jax.set_mesh(mesh):
    state = train_state.replicated_state(model, config, info.image_shape, jax.random.key(0), mesh)
    if step is None:  # the newest good checkpoint: a damaged newer one is reported in one line and skipped
      state, step = checkpoints.restore_newest_good(mgr, state, meta)
    else:
      state = checkpoints.restore(mgr, step, state, meta)
  log.info("restored step %d from %s", step, directory)
  return model, state, info, mesh


def _eval_step(variables, batch, *, model, num_steps):
  out = predict(model, variables, batch["image"], num_steps=num_steps)
  stats = {"correct": train_losses.per_step_correct(out["logits"], batch["label"], batch["mask"]),
           "count": jnp.sum(batch["mask"])}
  if data.labels_multi_hot(batch["label"]):
    stats["logits"] = out["logits"]  # [T,B,K]: mAP needs every example's scores
  if "fixations" in out:
    stats.update(scanpath.batch_sums(out, batch["mask"], batch["image"].shape[1]))
  return stats


def accuracy_per_step(model, variables, config, mesh, *, num_steps: int, max_examples: int = 0):
  """Clean accuracy at every step over the eval split (or its first ``max_examples``).

  Returns (accuracy [T], number of examples, {"saccades", "policy"} (:mod:`rsrnn_jax.evaluation.scanpath`) or {}
  for models without fixations). For multi-label data "accuracy" is the mean example F1;
  :func:`multilabel_per_step` has the real metrics.
  """
  acc, count, paths, _ = _evaluate_split(model, variables, config, mesh, num_steps=num_steps,
                                         max_examples=max_examples)
  return acc, count, paths


def multilabel_per_step(model, variables, config, mesh, *, num_steps: int, max_examples: int = 0):
  """mAP, CP, CR, CF1, OP, OR, OF1 at every step over the eval split: {metric: [T]}, number of examples."""
  _, count, _, per_step = _evaluate_split(model, variables, config, mesh, num_steps=num_steps,
                                          max_examples=max_examples)
  return per_step, count


def _evaluate_split(model, variables, config, mesh, *, num_steps: int, max_examples: int = 0):
  step_fn = jax.jit(functools.partial(_eval_step, model=model, num_steps=num_steps))
  batches = data.eval_batches(config.data, global_batch_size=config.eval.batch_size,
                              process_index=jax.process_index(), process_count=jax.process_count(),
                              max_examples=max_examples or None)
  totals, logits, labels = None, [], []
  for batch in batches:
    image_size = batch["image"].shape[1]
    sharded = parallel.shard_batch(batch, mesh)
    stats = step_fn(variables, sharded)
    if "logits" in stats:
      host = parallel.to_host({"logits": stats.pop("logits"), "label": sharded["label"], "mask": sharded["mask"]})
      keep = np.asarray(host["mask"]) > 0
      logits.append(np.asarray(host["logits"])[:, keep])
      labels.append(np.asarray(host["label"])[keep])
    stats = jax.device_get(stats)
    totals = stats if totals is None else jax.tree_util.tree_map(lambda a, b: a + b, totals, stats)
  count = float(totals["count"])
  paths = {}
  if "saccade_px" in totals:
    paths = dict(zip(("saccades", "policy"), scanpath.summary(totals, count, image_size)))
  per_step = (multilabel.metrics_per_step(np.concatenate(logits, 1), np.concatenate(labels))
              if logits else None)
  return np.asarray(totals["correct"]) / max(count, 1.0), int(count), paths, per_step


def train_and_evaluate(config, workdir: str, stop_at: float | None = None):
  """``--mode=train``: trains (resuming), then, if ``config.train.eval_at_end``, evaluates the final state in
  memory (not from disk); returns the evaluation's results or None. ``stop_at`` (epoch seconds): a time limit
  (:func:`rsrnn_jax.train.loop.train`); a training it stops is not evaluated."""
  loaded = train_loop.train(config, workdir, stop_at=stop_at)
  finished = int(jax.device_get(loaded[1].step)) >= int(config.train.num_train_steps)
  return evaluate(config, workdir, loaded=loaded) if config.train.eval_at_end and finished else None


def evaluate(config, workdir: str, loaded=None) -> dict:
  """Evaluates the latest checkpoint of ``workdir`` (or ``loaded``, a :func:`load_model` result) and writes
  ``eval/``."""
  model, state, info, mesh = loaded or load_model(config, workdir)
  num_steps = int(config.eval.num_glimpses)
  variables = train_state.variables_of(state)
  with jax.set_mesh(mesh):
    acc, count, paths, per_step = _evaluate_split(model, variables, config, mesh, num_steps=num_steps,
                                                  max_examples=int(config.eval.max_examples))
  results = {"step": int(jax.device_get(state.step)), "num_examples": count,
             "train_glimpses": int(config.train.num_glimpses), "eval_glimpses": num_steps,
             "accuracy_per_step": [float(a) for a in acc], "model": config.model.name,
             "saccades": paths.get("saccades", {}),  # per step t→t+1: mean length (px), fraction of moves > 1 px
             "policy": paths.get("policy", {}),  # policy entropy per saccade, fixation spread per step (scanpath.py)
             "adversarial_training": bool(config.train.adversarial.enabled),
             "config": config.to_dict()}
  headline, label = "accuracy", "accuracy"
  if info.multi_label:
    del results["accuracy_per_step"]
    results.update(multilabel_per_step=per_step, threshold=0.5)
    acc, headline, label = np.asarray(per_step["mAP"]), "mAP", "mAP"
  if jax.process_index() == 0:
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    workdir_lib.write_json(os.path.join(out_dir, "results.json"), results)  # atomic, strict JSON
    viz.plot_accuracy_per_step({config.model.name: acc}, os.path.join(out_dir, f"{headline}_per_step.png"),
                               train_glimpses=int(config.train.num_glimpses),
                               title=f"clean {label} per glimpse step", ylabel=f"{label} (%)")
    if is_recurrent(config.model):
      figure_steps(model, variables, config, out_dir)
    t_train = min(len(acc), int(config.train.num_glimpses))
    writers.MetricWriter(workdir, filename="eval.jsonl").write(
        results["step"], {f"{headline}_last": acc[-1], f"{headline}_train_T": acc[t_train - 1]},
        **{f"{headline}_per_step": [float(a) for a in acc]})
    log.info("eval %s per step: %s", label, " ".join(f"{a:.4f}" for a in acc))
  return results


def figure_arrays(model, variables, config, num_steps: int) -> dict:
  """The figure data: the first ``eval.num_figure_images`` test images run for ``num_steps`` steps (argmax
  fixations from the centre), as numpy arrays: ``images``, ``labels``, ``logits`` [T,n,K], and for the
  overt-attention models ``fixations`` [T,n,2] + ``glimpses`` [T,n,g,g,C], for S3TA ``attention``
  [T,n,heads,h,w].

  Runs on one process: the replicated variables are copied to the host first, so no collective is needed.
  """
  variables = jax.device_get(variables)
  n = int(config.eval.num_figure_images)
  batch = next(data.eval_batches(config.data, global_batch_size=n, max_examples=n))
  images = np.asarray(batch["image"])
  out = jax.jit(functools.partial(predict, model, num_steps=num_steps))(variables, images)
  arrays = {"images": images, "labels": np.asarray(batch["label"]), "logits": np.asarray(out["logits"])}
  if "fixations" in out:
    fix = np.asarray(out["fixations"])
    arrays["fixations"] = fix
    arrays["glimpses"] = np.stack([np.asarray(model.sampler.glimpses(jnp.asarray(images), jnp.asarray(fix[t]))[0])
                                   for t in range(num_steps)])
  if "attention" in out:
    arrays["attention"] = np.asarray(out["attention"])
  return arrays


def figure_steps(model, variables, config, out_dir: str, num_steps: int | None = None) -> list[str]:
  """Per-step figures of :func:`figure_arrays`: ``fixations.png`` (trajectories and glimpses) for the
  overt-attention models, ``attention.png`` (attention maps per step) for S3TA. Returns the files written."""
  f = figure_arrays(model, variables, config, num_steps or min(int(config.eval.num_glimpses), 8))
  single = f["labels"].ndim == 1  # multi-hot labels: no single class to print
  kwargs = dict(labels=f["labels"] if single else None,
                predictions=np.argmax(f["logits"][-1], -1) if single else None)
  written = []
  if "fixations" in f:
    written.append(os.path.join(out_dir, "fixations.png"))
    viz.plot_fixations(f["images"], f["fixations"], f["glimpses"], written[-1], **kwargs)
  if "attention" in f:
    written.append(os.path.join(out_dir, "attention.png"))
    viz.plot_attention(f["images"], f["attention"], written[-1], **kwargs)
  return written
