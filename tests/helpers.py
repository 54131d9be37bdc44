"""Tiny configs shared by the tests (widths small enough to compile in seconds)."""
import ast

import ml_collections

from configs import common
from rsrnn_jax import configlib

# launch.py flags that shrink configs/demo.py to tiny_config-like sizes (subprocess tests).
TINY_FLAGS = [
    "--config.data.canvas_size=32", "--config.data.num_clutter=2", "--config.data.clutter_size=5",
    "--config.model.sampler.out_size=16", "--config.model.sampler.density_ratio=4.0",
    "--config.model.encoder1=((4,1,1),(8,1,1))", "--config.model.core_features=8",
    "--config.model.encoder2=((8,1,0),)", "--config.model.ior_size=8",
    "--config.model.dorsal.saliency_size=4", "--config.model.dorsal.hidden=4",
    "--config.train.batch_size=8", "--config.train.warmup_steps=1", "--config.train.log_every=1",
    "--config.eval.batch_size=16", "--config.eval.max_examples=32", "--config.eval.num_figure_images=2",
]


def tiny_config(model: str = "rsrnn", **overrides):
  c = common.get_base_config()
  c.data.name = "cluttered_fashion_mnist"
  c.data.canvas_size = 32
  c.data.num_clutter = 2
  c.data.clutter_size = 5
  c.data.mean, c.data.std = (0.1,), (0.25,)
  common.set_model(c, model, width=4, out_size=16, density_ratio=4.0)
  c.model.encoder1 = ((4, 1, 1), (8, 1, 1))     # 16×16 glimpse → 4×4×8
  c.model.core_features = 8
  c.model.encoder2 = ((8, 1, 0),) if c.model.core == "conv_gru" else ()  # the 1-D core has no Encoder2
  c.model.ior_size = 8
  c.model.dorsal.saliency_size = 4
  c.model.dorsal.hidden = 4
  c.model.stages = ((4, 1, 1), (8, 1, 1), (8, 1, 1))
  if model == "s3ta":
    c.model.attention.update(key_features=4, value_features=8, basis_size=2)
  c.train.batch_size = 8
  c.train.num_train_steps = 4
  c.train.num_glimpses = 3
  c.train.warmup_steps = 1
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.train.eval_at_end = False
  c.eval.num_glimpses = 4
  c.eval.batch_size = 8
  c.eval.max_examples = 16
  c.eval.num_figure_images = 2
  return override(c, overrides)


override = configlib.set_dotted  # dotted keys ("train.batch_size": 4) on a config; returns it


def flag_overrides(flags: list[str]) -> dict:
  """``["--config.a.b=v", ...]`` (launch.py flags) → ``{"a.b": value}`` for :func:`override`."""
  out = {}
  for flag in flags:
    key, _, value = flag.removeprefix("--config.").partition("=")
    try:
      out[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[key] = value
  return out


def as_config(d) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(d)
