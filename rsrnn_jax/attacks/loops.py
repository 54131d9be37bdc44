"""The iteration loop of the gradient attacks (``pgd``, ``pgd_restarts``, ``apgd``): one policy, one place.

``iterate(num_steps, body, init, unroll=...)`` is ``lax.fori_loop(0, num_steps, body, init)`` with

* ``unroll=False`` (default): a rolled loop, one copy of the iteration in the compiled program;
* ``unroll=True``: every iteration in the program (``num_steps`` copies: that many times the compile time);
* ``unroll=k`` (an int ≥ 1): ``k`` iterations per trip of a rolled loop (a chunk; the remainder is unrolled).

``num_steps`` is a static Python int, or an integer scalar array (traced under ``jit``: one compilation then
serves every iteration count, e.g. an attack's 5 and its convergence check's 10 iterations; the loop is a
``while`` loop and cannot be unrolled).

The rolled loop is the default on every backend: one compilation whose size does not grow with the number of
iterations, and no host round trip per iteration. On XLA:CPU it used to cost 2–4× in speed, because the
convolution gradients that XLA emits run many times slower inside a ``while`` loop than outside and the
max-pool gradient (select-and-scatter) ran slowly everywhere; the models' layers now express both in forms that
run at the same speed inside and outside loops (:mod:`rsrnn_jax.models.fastops`), so a rolled PGD iteration
costs what an unrolled one does (docs/performance.md). ``unroll`` stays for models built from other layers.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def check_unroll(unroll) -> None:
  """``unroll`` must be a bool or an int ≥ 1 (raises a one-line ValueError)."""
  if isinstance(unroll, bool):
    return
  if not isinstance(unroll, int) or unroll < 1:
    raise ValueError(f"unroll must be True, False or an int >= 1 (iterations per loop trip), got {unroll!r}")


def check_steps(num_steps, unroll=False) -> None:
  """``num_steps``: a static int ≥ 0, or an integer scalar array with ``unroll=False`` (one-line ValueErrors)."""
  check_unroll(unroll)
  if isinstance(num_steps, (bool, np.bool_)):
    raise ValueError(f"num_steps must be a static Python int or an integer scalar array, got {num_steps!r}")
  if isinstance(num_steps, (int, np.integer)):
    if num_steps < 0:
      raise ValueError(f"num_steps must be >= 0, got {num_steps}")
    return
  if not (hasattr(num_steps, "dtype") and jnp.issubdtype(num_steps.dtype, jnp.integer) and jnp.ndim(num_steps) == 0):
    raise ValueError(f"num_steps must be a static Python int or an integer scalar array, got {num_steps!r}")
  if unroll is not False:
    raise ValueError("unroll needs a static (Python int) num_steps; a traced one runs a rolled while loop")


def iterate(num_steps, body: Callable[[Any, Any], Any], init, *, unroll: bool | int = False):
  """``body(i, carry) -> carry`` for i = 0 .. num_steps − 1 from ``init`` (see the module docstring)."""
  check_steps(num_steps, unroll)
  if not isinstance(num_steps, (int, np.integer)):
    return jax.lax.fori_loop(0, jnp.asarray(num_steps, jnp.int32), body, init)
  if unroll is True or (unroll is not False and unroll >= num_steps):
    unroll = True
  return jax.lax.fori_loop(0, num_steps, body, init, unroll=unroll if unroll is not False else None)
