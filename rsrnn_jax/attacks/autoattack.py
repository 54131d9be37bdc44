"""AutoAttack (Croce & Hein, ICML 2020) for any JAX classifier: :func:`autoattack`.

The versions of the authors' code (autoattack/autoattack.py, ``set_version``), every APGD and FAB with
``iterations`` = 100 iterations:

* ``standard``: APGD-CE (one run), APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries);
* ``plus``: APGD-CE and APGD-DLR (5 restarts each), FAB (5 restarts), Square, APGD-T, FAB-T;
* ``rand``: APGD-CE and APGD-DLR with EOT over 20 draws, for randomised models: ``logits_fn(images, key)``
  (one draw of the model; randomness only from the key).

Robust flags, as in the authors' code: the attacks run in that order, each only on the examples that every
earlier attack left correctly classified, and so does each restart of APGD and each target of APGD-T / FAB-T
(targets: the classes ranked highest by the clean logits after the label); examples are re-packed into batches
of ``batch_size`` (the last one padded, so each attack compiles once); an example is broken when the attack's
image is misclassified by one forward pass (one draw for ``rand``). The attacks are this package's own:
:func:`rsrnn_jax.attacks.apgd.apgd` (two departures from the authors' APGD, in its docstring),
:func:`rsrnn_jax.attacks.fab.fab` and :func:`rsrnn_jax.attacks.square.square_attack` (L∞ only: under
``norm="l2"`` Square is skipped and the result says so). bench/autoattack_reference.py compares the result with
the authors' code.

The compiled programs are kept per ``logits_fn`` object (weakly: dropping the function frees them) and per
attack, ε, norm and budget, so calling ``autoattack`` again with the same function (e.g. over several image
sets or seeds) neither traces nor compiles again; a new function object (a new lambda) compiles anew.
"""
from __future__ import annotations

import dataclasses
import logging
import time
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from rsrnn_jax.attacks import arguments, square
from rsrnn_jax.attacks.apgd import apgd, ranked_targets
from rsrnn_jax.attacks.fab import fab

VERSIONS = ("standard", "plus", "rand")
_EOT_DRAWS = 20  # version rand
_SQUARE_SCHEDULE = 10000  # AutoAttack runs Square with p's schedule of a 10,000-query budget (not rescaled)


def _apgd(loss, targeted=False, eot=None):
  def run(logits_fn, x, y, target, key, *, eps, norm, iterations, queries):
    return apgd(logits_fn, x, y, eps=eps, num_steps=iterations, norm=norm, loss=loss, targeted=targeted,
                target=target if targeted else None, rng=key, eot_samples=eot)
  return run


def _fab(targeted, restarts=1):
  def run(logits_fn, x, y, target, key, *, eps, norm, iterations, queries):
    return fab(logits_fn, x, y, eps=eps, norm=norm, targeted=targeted, target=target if targeted else None,
               num_restarts=restarts, num_steps=iterations, rng=key)
  return run


def _square(logits_fn, x, y, target, key, *, eps, norm, iterations, queries):
  return square.square_attack(logits_fn, x, y, eps=eps, num_queries=queries, rng=key,
                            schedule_queries=_SQUARE_SCHEDULE)


TARGETS = "targets"  # passes: one per target class (9, at most K − 1)
# Each version's attacks in the order they run: (name, run, passes, classes needed). Every pass runs on the
# examples still robust (AutoAttack's restarts and targets do the same): a number of passes, or TARGETS.
_VERSION_ATTACKS = {
    "standard": (("apgd-ce", _apgd("ce"), 1, 2), ("apgd-t", _apgd("dlr", True), TARGETS, 4),
                 ("fab-t", _fab(True), TARGETS, 2), ("square", _square, 1, 2)),
    "plus": (("apgd-ce", _apgd("ce"), 5, 2), ("apgd-dlr", _apgd("dlr"), 5, 3), ("fab", _fab(False, 5), 1, 2),
             ("square", _square, 1, 2), ("apgd-t", _apgd("dlr", True), TARGETS, 4),
             ("fab-t", _fab(True), TARGETS, 2)),
    "rand": (("apgd-ce", _apgd("ce", eot=_EOT_DRAWS), 1, 2), ("apgd-dlr", _apgd("dlr", eot=_EOT_DRAWS), 1, 3)),
}
_NUM_TARGETS = 9


# The compiled programs of each logits_fn, kept while the caller keeps that function: {logits_fn: {key: jitted}}.
# A jitted program refers to its logits_fn only weakly, so the cache never keeps a model alive.
_COMPILED = weakref.WeakKeyDictionary()


def _jitted(logits_fn, key, make):
  """``jax.jit`` of ``make(logits_fn)``, one per (logits_fn, key): a repeated autoattack call with the same
  function, ε, budget and batch shape reuses the compiled program instead of tracing and compiling it again.
  A function that cannot be weakly referenced (or a bound method, a new object at each access) is not cached."""
  try:
    programs = _COMPILED.setdefault(logits_fn, {})
  except TypeError:
    return jax.jit(make(logits_fn))
  if key not in programs:
    ref = weakref.ref(logits_fn)
    programs[key] = jax.jit(make(lambda *a: ref()(*a)))
  return programs[key]


def _attack_program(logits_fn, name, run, *, eps, norm, iterations, queries):
  make = lambda fn: lambda x, y, t, key: run(fn, x, y, t, key, eps=eps, norm=norm, iterations=iterations,
                                              queries=queries)
  return _jitted(logits_fn, ("attack", name, run, eps, norm, iterations, queries), make)


def _score_program(logits_fn, randomised):
  make = lambda fn: lambda v, key: (fn(v, key) if randomised else fn(v)).astype(jnp.float32)
  return _jitted(logits_fn, ("score", randomised), make)


@dataclasses.dataclass(frozen=True)
class AutoAttackResult:
  """What :func:`autoattack` returns (host numpy arrays).

  images:    [N, ...] per example the image of the attack that broke it, else the clean image
  robust:    [N] bool: correct on the clean image and on every attack's image
  broken_by: [N] str: the attack that broke the example ("apgd-ce", ...), "clean" if misclassified clean, "" if
             robust
  accuracy:  {"clean": ..., attack: the robust accuracy after that attack (cumulative)}, in run order
  seconds:   {attack: wall time}
  notes:     attacks of the version that were skipped, and why
  """
  images: np.ndarray
  robust: np.ndarray
  broken_by: np.ndarray
  accuracy: dict
  seconds: dict
  notes: tuple = ()

  @property
  def robust_accuracy(self) -> float:
    return float(np.mean(self.robust)) if self.robust.size else 0.0


def _fail(cond, message):
  if not cond:
    raise ValueError(message)


def _check_inputs(logits_fn, images, labels, eps, norm, version, rng, batch_size, iterations, queries):
  _fail(callable(logits_fn), f"logits_fn must be a function images -> logits [B, K], got {type(logits_fn).__name__}")
  _fail(version in VERSIONS, f"version must be one of {', '.join(VERSIONS)}, got {version!r}")
  _fail(norm in arguments.NORMS, f"norm must be one of {', '.join(arguments.NORMS)}, got {norm!r}")
  x, y = np.asarray(images), np.asarray(labels)
  _fail(x.ndim >= 2 and x.shape[0] > 0 and np.issubdtype(x.dtype, np.floating),
        f"images must be a non-empty float array [N, ...] with values in [0, 1], got {x.dtype} {x.shape}")
  _fail(bool(np.all(np.isfinite(x))) and x.min() >= 0.0 and x.max() <= 1.0,
        "images must be finite with values in [0, 1] (scale pixels to [0, 1] first)")
  _fail(y.shape == x.shape[:1] and np.issubdtype(y.dtype, np.integer),
        f"labels must be integer classes of shape [{x.shape[0]}], got {y.dtype} {y.shape}")
  _fail(isinstance(eps, (int, float, np.number)) and not isinstance(eps, bool) and 0 < float(eps) < np.inf,
        f"eps must be a positive number (the {norm} radius, pixels in [0, 1]), got {eps!r}")
  _fail(rng is not None and (jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key) or
                             jnp.shape(rng) == (2,)), f"rng must be a JAX PRNG key (jax.random.key(0)), got {rng!r}")
  for name, value in (("batch_size", batch_size), ("iterations", iterations), ("queries", queries)):
    _fail(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1,
          f"{name} must be an int >= 1, got {value!r}")
  return x, y.astype(np.int32)


def _plan(version, norm, attacks, ndim):
  """The (name, run, classes) of the attacks to run, and the notes on those skipped."""
  table = _VERSION_ATTACKS[version]
  names = [a[0] for a in table]
  if attacks is not None:
    attacks = tuple(attacks) if not isinstance(attacks, str) else (attacks,)
    _fail(len(attacks) > 0 and all(a in names for a in attacks) and len(set(attacks)) == len(attacks),
          f"attacks must be distinct names of version {version!r}: {', '.join(names)}; got {attacks!r}")
  chosen = [a for a in table if attacks is None or a[0] in attacks]
  if attacks is not None:
    chosen.sort(key=lambda a: attacks.index(a[0]))
  notes = []
  if norm != "linf" and any(a[0] == "square" for a in chosen):
    notes.append("square: skipped (this package's Square attack is L∞ only)")
  elif any(a[0] == "square" for a in chosen):
    _fail(ndim == 4, "images must be [N, H, W, C] for the Square attack; pass attacks= without 'square' for other "
          "inputs")
  return [a for a in chosen if not (a[0] == "square" and norm != "linf")], tuple(notes)


def _chunks(rows, size):
  """Batches of ``size`` row indices (the last one padded with its first row) and their real lengths."""
  for start in range(0, len(rows), size):
    part = rows[start:start + size]
    yield np.concatenate([part, np.full(size - len(part), part[0], part.dtype)]), len(part)


def autoattack(logits_fn, images, labels, *, eps, norm: str = "linf", version: str = "standard", rng,
               batch_size: int = 250, attacks=None, iterations: int = 100, queries: int = 5000,
               verbose: bool = False) -> AutoAttackResult:
  """AutoAttack (module docstring) on any classifier → :class:`AutoAttackResult`.

  logits_fn: ``logits_fn(images [B, ...]) -> logits [B, K]``, pure JAX (it is jitted and differentiated);
  ``version="rand"``: ``logits_fn(images, key)``, one draw of a randomised model. images: float [N, ...] in
  [0, 1] ([N, H, W, C] for Square); labels: int [N]. eps: the L∞ or L2 radius. rng: a PRNG key (every random
  start, target draw and EOT draw derives from it). batch_size: examples per compiled batch. attacks: a subset
  of the version's attacks, run in the given order (e.g. ``("fab-t",)`` to run one alone); iterations: per
  APGD / FAB run; queries: Square's budget. Runs on the host, batch by batch (not itself jittable).
  """
  x, y = _check_inputs(logits_fn, images, labels, eps, norm, version, rng, batch_size, iterations, queries)
  runs, notes = _plan(version, norm, attacks, x.ndim)
  randomised = version == "rand"
  size = min(int(batch_size), len(x))
  keys = jax.random.split(rng, len(runs) + 1)
  score = _score_program(logits_fn, randomised)

  logits = np.asarray(score(x[:size], keys[0]))
  _fail(logits.ndim == 2 and logits.shape[0] == size and logits.shape[1] >= 2,
        f"logits_fn must return logits [B, K] with K >= 2 classes, got shape {logits.shape}")
  k = logits.shape[1]
  _fail(y.min() >= 0 and y.max() < k, f"labels must be classes in [0, {k}), got values in [{y.min()}, {y.max()}]")
  need = max((a[3] for a in runs), default=2)
  _fail(k >= need, f"logits_fn returns {k} classes; the attacks of version {version!r} need >= {need} (DLR loss): "
        "choose attacks= without them")

  clean = np.zeros((len(x), k), np.float32)
  for j, (rows, n) in enumerate(_chunks(np.arange(len(x)), size)):
    clean[rows[:n]] = np.asarray(score(x[rows], jax.random.fold_in(keys[0], j)))[:n]
  robust = np.argmax(clean, -1) == y
  targets = np.asarray(ranked_targets(jnp.asarray(clean), jnp.asarray(y), _NUM_TARGETS))
  broken_by = np.where(robust, "", "clean").astype(object)
  adv, accuracy, seconds = x.copy(), {"clean": float(robust.mean())}, {}
  for i, (name, run, passes, _) in enumerate(runs):
    start = time.perf_counter()
    attack = _attack_program(logits_fn, name, run, eps=float(eps), norm=norm, iterations=int(iterations),
                             queries=int(queries))
    for p in range(targets.shape[1] if passes == TARGETS else passes):
      for j, (rows, n) in enumerate(_chunks(np.flatnonzero(robust), size)):
        key = jax.random.fold_in(jax.random.fold_in(keys[i + 1], p), j)
        images_j = attack(x[rows], y[rows], targets[rows, min(p, targets.shape[1] - 1)], key)
        wrong = np.argmax(np.asarray(score(images_j, jax.random.fold_in(key, 1))), -1)[:n] != y[rows[:n]]
        hit = rows[:n][wrong]
        robust[hit], broken_by[hit], adv[hit] = False, name, np.asarray(images_j)[:n][wrong]
    accuracy[name], seconds[name] = float(robust.mean()), time.perf_counter() - start
    if verbose:
      logging.info("autoattack %s: robust accuracy %.2f%% (%.1f s)", name, 100 * accuracy[name], seconds[name])
  return AutoAttackResult(images=adv, robust=robust, broken_by=broken_by.astype(str), accuracy=accuracy,
                          seconds=seconds, notes=notes)
