"""Shared defaults the experiment configs build on (optimiser, checkpointing, evaluation, model presets).

Every field is documented here once; ``configs/demo.py`` and ``configs/imagenet.py`` override what differs.
"""
import ml_collections

from rsrnn_jax import data


def model_preset(name: str, *, width: int = 64, out_size: int = 64, density_ratio: float = 10.0):
  """Model fields for ``name`` at base width ``width`` (64 = the paper's VGG-8: 64-128-256-512)."""
  w = width
  m = ml_collections.ConfigDict()
  m.name = name
  m.dtype = "float32"          # compute dtype: float32 | bfloat16 (params and optimiser state stay float32)
  m.norm = "group"             # batch | group | none (GroupNorm keeps the scan carry free of batch stats)
  m.unroll = -1                # nn.scan unroll: -1 = fully unrolled on CPU, rolled (1) on GPU/TPU
  m.remat = False              # rematerialise each glimpse step (memory for long unrolls / attacks)
  m.sampler = ml_collections.ConfigDict(dict(
      kind="retina",           # retina | crop
      out_size=out_size,       # glimpse side in samples ("res64")
      density_ratio=density_ratio,  # the paper's b: areal density ratio fovea/periphery (> 1)
      scales=(0.25,),          # crop side(s) as a fraction of the image side (crop sampler)
  ))
  # Stages are (features, convs, pool). Encoder1 = VGG-8 blocks 1–3, Encoder2 = block 4 (paper.md §9).
  m.encoder1 = ((w, 2, 1), (2 * w, 2, 1), (4 * w, 2, 1))
  m.core = "conv_gru"          # conv_gru (2-D, RS-RNN) | gru (1-D on pooled features)
  m.core_features = 4 * w
  m.encoder2 = ((8 * w, 2, 0),)
  m.ior_size = 32              # side of the image-space inhibition-of-return map
  m.dorsal = ml_collections.ConfigDict(dict(
      saliency_size=16, hidden=64, sigma_init=0.22, sigma_min=0.02, learn_sigma=True))
  m.stages = ((w, 2, 1), (2 * w, 2, 1), (4 * w, 2, 1), (8 * w, 2, 0))  # ff_cnn backbone
  if name == "ff_cnn":
    m.norm = "batch"
  return m


def get_base_config(data_name: str = "cluttered_fashion_mnist"):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0            # 0 = every device of every process; n = the first n (single process)

  # Data fields are documented in rsrnn_jax/data/pipeline.py; mean/std normalise inside the model.
  c.data = data.default_data_config(data_name)
  c.data.mean = (0.5,)
  c.data.std = (0.25,)

  c.model = model_preset("rsrnn")

  c.train = ml_collections.ConfigDict(dict(
      batch_size=128,          # global batch over all devices and processes
      num_train_steps=1000,    # optimiser steps
      num_glimpses=4,          # T during training
      optimizer="adamw",       # adamw | sgd (momentum)
      learning_rate=1e-3,      # peak lr for batch_size (not rescaled)
      warmup_steps=100,
      schedule="cosine",       # cosine | step (×0.1 at lr_boundaries, fractions of num_train_steps)
      lr_boundaries=(0.667, 0.917),
      momentum=0.9,
      weight_decay=1e-4,
      grad_clip=1.0,           # global-norm clipping (0 = off)
      init_fixation="random",  # random: uniform in [-0.9, 0.9]² (the authors' code) | center
      loss_steps="all",        # all: CE averaged over steps | last: CE on the last step only
      rl_weight=1.0,           # REINFORCE weight for the fixation policy
      baseline_weight=1.0,     # MSE weight of the learned reward baseline
      log_every=50,
      checkpoint_every=500,
      keep_checkpoints=3,
      eval_at_end=True,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      num_glimpses=16,         # T_eval: may exceed train.num_glimpses
      batch_size=256,
      max_examples=0,          # 0 = the whole eval split
      checkpoint_path="",      # a checkpoint step dir or checkpoints dir to evaluate instead of WORKDIR's
      num_figure_images=8,     # test images in the fixation figure
  ))
  return c
