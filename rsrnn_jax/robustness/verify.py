"""Verified adversarial sets (RobustBench style): what ``--mode=attack`` saves and ``--mode=verify`` checks.

``--mode=attack`` saves, per ε, the strongest adversarial image found for every attacked example
(:class:`rsrnn_jax.robustness.flags.Keeper`: wrong at step k if any attack made it so, then wrong at T_eval, then
at the most steps) in ``WORKDIR/attack_<profile>/adversarial_eps<ε>.npz``:

  images [N, H, W, C] float32, labels, targets, indices (positions in the eval split) [N], eps, norm,
  attack [N] (which attack won the example; ``clean`` = none beat the clean image), fingerprint (SHA-256 of
  the restored variables and the checkpoint step), checkpoint_step, attack_step, eval_steps, fixations,
  batch_size, seed, num_devices, run_id (the run that wrote the folder) and num_correct [T]: the saved images'
  correct count per step, re-scored by the model alone (:func:`rescore`) — the number the report prints as the
  verified robust accuracy.

At step k the saved set's accuracy is the worst case over the attacks (the images that broke step k are the
ones kept); at other steps one image per example cannot realise every attack's per-step worst case, so the
saved set's accuracy there may exceed the per-step worst case (the report prints both).

``--mode=verify`` (:func:`run`) first checks the folder against its ``manifest.json`` (one run id, every file's
digest: :mod:`rsrnn_jax.outputs`), then restores the checkpoint, checks the fingerprint, reloads the clean test
images by index, checks that every image is finite, in [0, 1] and inside the ε-ball (tolerance ``TOL``), re-scores the
images with the model alone and prints the robust accuracy per step. Any difference from the saved counts or
any image outside the ball is a one-line error (exit status 2).
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
import zlib

import jax
import numpy as np

from rsrnn_jax import data, outputs
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.models import predict
from rsrnn_jax.train import parallel

log = logging.getLogger(__name__)
TOL = 1e-6  # |adv − clean| may exceed ε by float32 rounding of the projection
PREFIX = "adversarial_eps"


def set_name(eps: float) -> str:
  return f"{PREFIX}{eps:g}.npz"


def fingerprint(variables, step: int) -> str:
  """SHA-256 of every array of ``variables`` (path, dtype, shape, bytes, in path order) and the step."""
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(parallel.to_host(variables))[0]
  for path, leaf in sorted(leaves, key=lambda p: jax.tree_util.keystr(p[0])):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype}|{a.shape}|".encode())
    h.update(a.tobytes())
  h.update(f"step={int(step)}".encode())
  return h.hexdigest()


def eval_base_key(seed: int):
  """The key of the suite's evaluation draws (``SuiteRun.key_for("eval")``); batch j uses fold_in(it, j)."""
  return jax.random.fold_in(jax.random.key(int(seed)), zlib.crc32(b"eval") & 0x7FFFFFFF)


def rescore(model, variables, images, labels, *, num_steps: int, fixations: str, batch_size: int, mesh,
            seed: int = 0):
  """Per-example correctness [N, T] of ``images`` under the model alone, in batches of ``batch_size`` in order
  (the suite's layout: batch j is evaluated with the key of the suite's batch j)."""
  images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
  n, bs = len(images), int(batch_size)
  fn = _predict_fn(model, num_steps, fixations)
  base = eval_base_key(seed)
  p_index, local = jax.process_index(), bs // jax.process_count()
  out = []
  for j, start in enumerate(range(0, n, bs)):
    rows = np.arange(start, min(start + bs, n))
    padded = np.concatenate([rows, np.full(bs - len(rows), rows[0])])
    mine = {"image": images[padded][p_index * local:(p_index + 1) * local]}
    batch = parallel.shard_batch(mine, mesh)
    logits = np.asarray(parallel.to_host(fn(variables, batch["image"], jax.random.fold_in(base, j))))
    out.append((np.argmax(logits, -1) == labels[padded][None]).T[:len(rows)])
  return np.concatenate(out) if out else np.zeros((0, num_steps), bool)


_FNS = {}  # (id(model), steps, fixations) → (model, jitted logits): one compilation per model and setting


def _predict_fn(model, num_steps, fixations):
  key = (id(model), num_steps, fixations)
  if key not in _FNS or _FNS[key][0] is not model:
    _FNS[key] = (model, jax.jit(lambda v, x, rng: predict(model, v, x, num_steps=num_steps, fixations=fixations,
                                                          rng=rng)["logits"]))
  return _FNS[key][1]


def save_set(path: str, keeper, *, eps: float, labels, targets, indices, num_correct, meta: dict) -> None:
  """Writes one verified set (module docstring) atomically."""
  with workdir_lib.atomic_path(path) as tmp:
    np.savez_compressed(tmp, images=np.asarray(keeper.images, np.float32), labels=np.asarray(labels, np.int32),
                        targets=np.asarray(targets, np.int32), indices=np.asarray(indices, np.int64),
                        eps=np.float64(eps), attack=np.asarray(keeper.winners()),
                        num_correct=np.asarray(num_correct, np.int64),
                        **{k: np.asarray(v) for k, v in meta.items()})


def rescore_kept(r, worst: list) -> list:
  """The suite's kept images of every ε (``r``: its SuiteRun) re-scored by the model alone: the verified
  robust accuracy per step, how many examples it differs on from the worst case at step k (decision-boundary
  ties between two compiled programs; 0 expected) and which attack won how many examples."""
  a, out = r.config.attack, []
  for keeper, w in zip(r.keepers, worst):
    correct = rescore(r.model, r.variables, keeper.images, r.host["label"], num_steps=r.t_eval,
                      fixations=a.fixations, batch_size=int(a.batch_size), mesh=r.mesh, seed=int(a.seed))
    n = max(len(correct), 1)
    names, counts = np.unique(np.asarray(keeper.winners()), return_counts=True)
    out.append({"eps": w["eps"], "file": set_name(w["eps"]), "num_examples": int(len(correct)),
                "num_correct": [int(v) for v in correct.sum(0)],
                "accuracy_per_step": [float(v) / n for v in correct.sum(0)],
                "differ_from_worst_at_k": int((correct[:, r.k - 1] != w["adv_correct"][:, r.k - 1]).sum()),
                "won_by": {str(name): int(c) for name, c in zip(names, counts)}})
  return out


def save_kept(r, verified: list, out_dir: str, *, fingerprint: str, step: int, run_id: str = "") -> None:
  """``out_dir/adversarial_eps<ε>.npz`` for every ε of ``verified`` (:func:`rescore_kept`) from ``r.keepers``."""
  a = r.config.attack
  meta = dict(norm=a.norm, fingerprint=fingerprint, checkpoint_step=step, attack_step=r.k, eval_steps=r.t_eval,
              fixations=a.fixations, batch_size=int(a.batch_size), seed=int(a.seed), profile=a.profile,
              num_devices=r.mesh.devices.size, run_id=run_id)
  for keeper, v in zip(r.keepers, verified):
    save_set(os.path.join(out_dir, v["file"]), keeper, eps=v["eps"], labels=r.host["label"],
             targets=r.host["target"], indices=r.host["index"], num_correct=v["num_correct"], meta=meta)


def clean_images(config, indices, batch_size: int = 256):
  """The clean eval images and labels at ``indices`` (positions in the eval split), from the data pipeline."""
  indices = np.asarray(indices, np.int64)
  n = int(indices.max()) + 1 if len(indices) else 0
  images, labels = [], []
  for b in data.eval_batches(config.data, global_batch_size=batch_size, max_examples=n):
    keep = np.asarray(b["mask"]) > 0
    images.append(np.asarray(b["image"])[keep])
    labels.append(np.asarray(b["label"])[keep])
  if not images or sum(len(v) for v in images) < n:
    raise workdir_lib.UserError(f"the eval split of config.data has fewer than {n} examples: verify with the "
                                "data config of the attacked run")
  return np.concatenate(images)[indices], np.concatenate(labels)[indices].astype(np.int32)


def check_images(adv, clean, eps: float, norm: str) -> dict:
  """Finite, in [0, 1] and inside the ε-ball: counts of the offending images and the largest distance."""
  adv, clean = np.asarray(adv, np.float64), np.asarray(clean, np.float64)
  n = len(adv)
  flat = (adv - clean).reshape(n, -1)
  finite = np.isfinite(adv.reshape(n, -1)).all(1)
  box = ((adv >= 0) & (adv <= 1)).reshape(n, -1).all(1)
  dist = np.abs(flat).max(1) if norm == "linf" else np.sqrt((flat ** 2).sum(1))
  dist = np.where(finite, dist, np.inf)
  return {"non_finite": int((~finite).sum()), "outside_box": int((finite & ~box).sum()),
          "outside_ball": int((dist > eps + TOL).sum()), "max_distance": float(dist.max()) if n else 0.0}


def verify_set(model, variables, step: int, saved: dict, clean: np.ndarray, clean_labels, mesh) -> dict:
  """Checks one saved set (``saved``: the npz's arrays) against the model and the clean images; returns the
  numbers, with ``problems`` (one string each; empty when the set verifies)."""
  eps, norm = float(saved["eps"]), str(saved["norm"])
  problems = []
  fp = fingerprint(variables, step)
  if str(saved["fingerprint"]) != fp:
    problems.append(f"made on another checkpoint (fingerprint {str(saved['fingerprint'])[:12]}…, step "
                    f"{int(saved['checkpoint_step'])}; the restored one is {fp[:12]}…, step {step})")
  if not np.array_equal(np.asarray(saved["labels"]), np.asarray(clean_labels)):
    problems.append("its labels differ from the eval split's at its indices (another data config?)")
  box = check_images(saved["images"], clean, eps, norm)
  if box["non_finite"] or box["outside_box"] or box["outside_ball"]:
    problems.append(f"{box['non_finite']} non-finite images, {box['outside_box']} outside [0, 1], "
                    f"{box['outside_ball']} outside the ε-ball (largest {norm} distance {box['max_distance']:.6g} "
                    f"> ε = {eps:g})")
  correct = rescore(model, variables, saved["images"], saved["labels"], num_steps=int(saved["eval_steps"]),
                    fixations=str(saved["fixations"]), batch_size=int(saved["batch_size"]), mesh=mesh,
                    seed=int(saved["seed"]))
  counts = correct.sum(0).astype(np.int64)
  expected = np.asarray(saved["num_correct"], np.int64)
  if not np.array_equal(counts, expected):
    steps = [int(s) + 1 for s in np.flatnonzero(counts != expected)]
    problems.append(f"re-scored robust accuracy differs from the reported one at steps {steps}: "
                    f"{counts.tolist()} vs {expected.tolist()} correct of {len(correct)}")
  return {"eps": eps, "num_examples": int(len(correct)), "num_correct": counts.tolist(),
          "accuracy_per_step": (counts / max(len(correct), 1)).tolist(), **box, "problems": problems}


def locate(config, workdir: str) -> list[str]:
  """The saved sets to verify: ``config.verify.path`` (an npz or an attack folder) or the newest attack
  folder of ``workdir`` (by the time of its results.json), after checking them against the folder's manifest
  (:func:`rsrnn_jax.outputs.check_manifest`: one run, every file as written). The unfinished sibling of an
  attack run (``attack_<profile>.tmp-<id>``) is never taken."""
  path = config.get("verify", {}).get("path", "") if "verify" in config else ""
  if not path:
    folders = [os.path.dirname(p) for p in glob.glob(os.path.join(workdir, "attack_*", "results.json"))]
    for f in filter(outputs.is_staging, folders):
      log.info("ignoring %s: the unfinished output of an attack run (the next --mode=attack removes it)", f)
    folders = [f for f in folders if not outputs.is_staging(f)]
    if not folders:
      raise workdir_lib.UserError(f"no attack results in {workdir}: run --mode=attack first, or set "
                                  "--config.verify.path")
    path = max(folders, key=lambda f: os.path.getmtime(os.path.join(f, "results.json")))
  if os.path.isfile(path):
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(os.path.join(folder, outputs.MANIFEST)):  # a lone copy of a set is checked on its own
      outputs.check_manifest(folder, [os.path.basename(path)])
    return [path]
  files = sorted(glob.glob(os.path.join(path, f"{PREFIX}*.npz")))
  if not files:
    raise workdir_lib.UserError(f"no {PREFIX}*.npz in {path}: it was made before verified sets existed; run "
                                "--mode=attack again")
  outputs.check_manifest(path)
  return files


def _check_run_id(path: str, saved: dict) -> None:
  """A set inside a folder with a manifest must carry the manifest's run id (written by the same run)."""
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.exists(os.path.join(folder, outputs.MANIFEST)):
    return
  expected, got = outputs.read_manifest(folder)["run_id"], str(saved.get("run_id", ""))
  if got != expected:
    raise workdir_lib.UserError(f"{path} was written by run {got or '(none)'} but {folder}/{outputs.MANIFEST} "
                                f"is run {expected}: its files come from different runs; run --mode=attack again")


def run(config, workdir: str) -> list[dict]:
  """``--mode=verify``: every saved set of the attack folder (module docstring); raises a one-line UserError
  if any fails."""
  from rsrnn_jax.evaluation import clean as evaluate
  from rsrnn_jax.train import state as train_state

  files = locate(config, workdir)
  model, state, _, mesh = evaluate.load_model(config, workdir)
  variables, step = train_state.variables_of(state), int(jax.device_get(state.step))
  out, failed = [], []
  with jax.set_mesh(mesh):
    for path in files:
      with np.load(path, allow_pickle=False) as f:
        saved = {k: f[k] for k in f.files}
      _check_run_id(path, saved)
      clean, labels = clean_images(config, saved["indices"])
      res = verify_set(model, variables, step, saved, clean, labels, mesh)
      res["file"] = path
      out.append(res)
      if jax.process_index() == 0:
        acc = " ".join(f"{100 * v:.1f}" for v in res["accuracy_per_step"])
        print(f"verify {os.path.basename(path)}: ε={res['eps']:g}, {res['num_examples']} images, max distance "
              f"{res['max_distance']:.6g}; robust accuracy (%) per step 1..{len(res['num_correct'])}: {acc} — "
              f"{'OK' if not res['problems'] else 'FAILED'}", flush=True)
      failed += [f"{os.path.basename(path)}: {p}" for p in res["problems"]]
  if failed:
    raise workdir_lib.UserError("verification failed: " + "; ".join(failed))
  return out
