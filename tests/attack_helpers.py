"""Shared by the attack tests: a tiny untrained model (eval mode) and random images."""
import jax
import jax.numpy as jnp

from rsrnn_jax.models import build_model
from tests.helpers import tiny_config

B, S, K = 4, 32, 10
_CACHE = {}


def untrained(model_name="rsrnn"):
  """(config, model, variables) of a tiny untrained model, shared by the tests of one worker."""
  if model_name not in _CACHE:
    cfg = tiny_config(model_name, **{"model.unroll": 1})  # rolled scan: faster compiles, same numbers
    model = build_model(cfg.model, num_classes=K, mean=cfg.data.mean, std=cfg.data.std)
    variables = model.init({"params": jax.random.key(0), "fixation": jax.random.key(1)},
                           jnp.zeros((2, S, S, 1)), num_steps=2, train=False)
    _CACHE[model_name] = (cfg, model, variables)
  return _CACHE[model_name]


def images(seed=0, n=B):
  return jax.random.uniform(jax.random.key(seed), (n, S, S, 1))
