"""The attacks' argument vocabulary and checks (Python level, at trace time): norms, losses, static counts,
non-negative hyper-parameters (concrete ones checked, traced ones clamped), batched float images and their
labels, and a scalar or per-example hyper-parameter broadcast against the images. Every attack of the package
(core, apgd, fab, square) validates through these, so one bad value gets the same one-line error everywhere."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NORMS = ("linf", "l2")
LOSSES = ("ce", "margin")              # the losses of pgd / fgsm / pgd_restarts


def check_norm(norm):
  if norm not in NORMS:
    raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def check_loss(loss):
  if loss not in LOSSES:
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")


def concrete(value):
  """The value as a numpy array if it is known at trace time, else None (a tracer)."""
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_nonneg(name, value):
  v = concrete(value)
  if v is None:
    return
  if not np.issubdtype(v.dtype, np.number) or v.dtype == np.bool_:
    raise ValueError(f"{name} must be a number, got {value!r}")
  if np.any(np.isnan(v)) or np.any(v < 0):
    raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_count(name, value, minimum):
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise ValueError(f"{name} must be a static Python int, got {value!r}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")


def per_example(value, x):
  """A scalar or [B] hyper-parameter as an array broadcastable against x ([B, ...]), clamped at 0."""
  v = jnp.maximum(jnp.asarray(value, dtype=x.dtype), 0)
  if v.ndim == 0:
    return v
  if v.ndim == 1 and v.shape[0] == x.shape[0]:
    return v.reshape((x.shape[0],) + (1,) * (x.ndim - 1))
  raise ValueError(f"expected a scalar or a per-example [{x.shape[0]}] array, got shape {v.shape}")


def check_images_labels(images, labels):
  if images.ndim < 2:
    raise ValueError(f"images must be batched [B, ...], got shape {images.shape}")
  if not jnp.issubdtype(images.dtype, jnp.floating):
    raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
  if labels.shape != images.shape[:1]:
    raise ValueError(f"labels must have shape [{images.shape[0]}], got {labels.shape}")
