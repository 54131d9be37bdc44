"""Shared defaults the experiment configs build on (optimiser, checkpointing, evaluation, model presets).

Every field is documented here once; ``configs/demo.py`` and ``configs/imagenet.py`` override what differs.
"""
import ml_collections

from rsrnn_jax import data
from rsrnn_jax.models import MODELS, WHOLE_IMAGE_MODELS


def vgg8(width: int = 64):
  """The shared backbone as (features, convs, pool) stages: VGG-8 64-128-256-512 at width 64 (paper.md §4)."""
  w = width
  return ((w, 2, 1), (2 * w, 2, 1), (4 * w, 2, 1), (8 * w, 2, 0))


def model_preset(name: str, *, width: int = 64, stages=None, out_size: int = 64, density_ratio: float = 10.0):
  """Model fields for ``name`` (docs/zoo.md), every model built from the same backbone ``stages``.

  ``stages`` (default :func:`vgg8` at ``width``) is split per model: RS-RNN runs its first three stages as
  Encoder1 and the rest as Encoder2 around the ConvGRU; the 1-D baselines run all of them on each glimpse,
  then a GRU on the pooled features; FF-CNN and S3TA run them on the whole image.
  """
  stages = tuple(tuple(s) for s in (stages or vgg8(width)))
  m = ml_collections.ConfigDict()
  m.name = name
  m.dtype = "float32"          # compute dtype: float32 | bfloat16 (params and optimiser state stay float32)
  m.norm = "group"             # batch | group | none (GroupNorm keeps the scan carry free of batch stats)
  m.unroll = -1                # nn.scan unroll: -1 = auto (0 on CPU, 1 on GPU/TPU); 0 = full; n = n per trip
  m.remat = False              # rematerialise each glimpse step (memory for long unrolls / attacks)
  m.sampler = ml_collections.ConfigDict(dict(
      kind="retina",           # retina | crop
      out_size=out_size,       # glimpse side in samples ("res64")
      density_ratio=density_ratio,  # the paper's b: areal density ratio fovea/periphery (> 1)
      scales=(0.25,),          # crop side(s) as a fraction of the image side (crop sampler)
  ))
  # Stages are (features, convs, pool). Encoder1 = VGG-8 blocks 1–3, Encoder2 = block 4 (paper.md §9).
  m.encoder1 = stages[:3]
  m.core = "conv_gru"          # conv_gru (2-D, RS-RNN) | gru (1-D on pooled features)
  m.core_features = stages[2][0]
  m.encoder2 = stages[3:]
  m.ior_size = 32              # side of the image-space inhibition-of-return map
  m.dorsal = ml_collections.ConfigDict(dict(
      saliency_size=16, hidden=64, sigma_init=0.22, sigma_min=0.02, learn_sigma=True,
      ior_floor=0.01,   # weight an inhibited cell keeps (rsrnn_jax/models/dorsal.py)
      combine="log"))   # log: P ∝ exp(S)·Γ | product: softmax(softplus(S)·Γ), the paper's S ⊙ M at ior_floor=0
  m.stages = stages            # whole-image backbone (ff_cnn, s3ta)
  if name in ("base_retina", "dram", "gfnet_m"):  # 1-D GRU on the pooled ventral features
    m.encoder1, m.encoder2 = stages, ()
    m.core = "gru"
    m.core_features = stages[-1][0]
    if name != "base_retina":
      m.sampler.kind = "crop"
      m.sampler.scales = (0.25, 0.5) if name == "dram" else (0.25,)
  elif name in WHOLE_IMAGE_MODELS:
    m.norm = "batch"           # the backbone runs once, outside the recurrence: BatchNorm as in the paper
    if name == "s3ta":
      m.core_features = stages[-1][0]  # LSTM units
      # Keys/values from the backbone + a fixed cosine spatial basis, one LSTM query per head
      # (rsrnn_jax/models/s3ta.py). Only in this preset: checkpoints record the model fields.
      m.attention = ml_collections.ConfigDict(dict(
          heads=2,                 # attention heads (the authors' run name `head2`)
          key_features=stages[0][0],      # 1×1-conv key channels (before the basis is appended)
          value_features=stages[-2][0],   # 1×1-conv value channels (before the basis is appended)
          basis_size=8,            # U = V: cos(πu·y)·cos(πv·x), u, v < basis_size → basis_size² channels
      ))
  elif name != "rsrnn":
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
  return m


# Training fields that belong to the model: every model sets each of them (the default unless listed), so
# switching models never keeps the previous model's value. A config may still override them afterwards.
MODEL_TRAIN_FIELDS = dict(loss_steps="all")
MODEL_TRAIN_DEFAULTS = {
    "s3ta": dict(loss_steps="last"),  # the authors' run name `s3TA_lastStepLoss_...` (paper.md §5)
}


def set_model(c, name: str, **preset_kwargs):
  """Sets ``c.model`` to ``model_preset(name, ...)`` and the model's training fields in ``c.train``."""
  c.model = model_preset(name, **preset_kwargs)
  c.train.update({**MODEL_TRAIN_FIELDS, **MODEL_TRAIN_DEFAULTS.get(name, {})})
  return c


ATTACK_PROFILES = ("paper", "strong")
# The fields that define a profile; everything else in ``config.attack`` (ε grids, subset, sizes, checks) is
# data- and budget-dependent and may be overridden without changing the profile's meaning.
ATTACK_PROFILE_FIELDS = ("norm", "step_size", "num_iterations", "num_restarts", "random_start", "losses",
                         "horizons", "eot_samples")


def attack_profile(name: str = "paper"):
  """The ``config.attack`` section for profile ``name`` (rsrnn_jax/attacks/suite.py runs it; see its docstring).

  paper:  as the authors ran it (paper.md §7): L∞ PGD, 5 iterations, step ε/3, uniform random start, CE on the
          logits of attack step k, argmax fixations, one run. The full-horizon attack (sanity check 7) is run
          next to it with the same parameters.
  strong: 100 iterations, step ε/10, 2 random restarts for each of the CE and margin losses (worst per
          example), step-k, mean-over-1..k and full-horizon objectives, EOT over 8 draws when
          ``fixations="sample"``. Headline number: the per-example, per-step worst case over every attack.
  Select with ``configs/demo.py:attack=strong`` (or ``c.attack = attack_profile("strong")`` in a config).
  Fields in ATTACK_PROFILE_FIELDS define the profile; a report lists any that differ from the named profile.
  """
  if name not in ATTACK_PROFILES:
    raise ValueError(f"unknown attack profile {name!r}; choose one of {', '.join(ATTACK_PROFILES)}")
  a = ml_collections.ConfigDict()
  a.profile = name
  # --- threat model and the profile's attack (ATTACK_PROFILE_FIELDS) ---
  a.norm = "linf"              # linf | l2 (the Square attack of check 5 is L∞ only)
  a.step_size = 1.0 / 3.0      # PGD step as a fraction of ε
  a.num_iterations = 5         # PGD iterations
  a.num_restarts = 1           # random restarts per loss; the worst per example is kept
  a.random_start = True        # uniform random start in the ε-ball
  a.losses = ("ce",)           # ce | margin; several: run each, keep the worst per example
  a.horizons = ("step", "full")  # objectives: step = logits of step k; avg = mean logits of steps 1..k;
                               # full = mean logits of steps 1..T_eval (check 7 needs step and full)
  a.eot_samples = 1            # EOT draws (averaged logits) per forward pass when fixations="sample"
  # --- what is attacked and evaluated ---
  a.fixations = "argmax"       # argmax (deterministic, the eval policy) | sample (stochastic policy + EOT)
  a.attack_step = 4            # k: the unrolled step whose logits the attack uses (AAAI 4; v1 12)
  a.eval_steps = 0             # T_eval: steps the attacked images are run for; 0 = config.eval.num_glimpses
  a.epsilons = (2e-3, 3e-3, 5e-3, 7e-3)              # untargeted ε grid, pixel scale [0, 1] (paper v1)
  a.targeted = True            # also run the targeted attack (targets: uniform over the other classes)
  a.targeted_epsilons = (3e-3, 5e-3, 7e-3, 1e-2)     # targeted ε grid (paper v1)
  a.target_seed = 0            # targets depend only on (target_seed, example index, label): shared by models
  a.seed = 0                   # random starts, restarts, EOT and Square draws
  a.num_examples = 1000        # first N examples of the eval split (paper: val1000); 0 = all
  a.batch_size = 128           # global attack batch (divisible by the device count)
  a.prob_map = ml_collections.ConfigDict(dict(
      grid=32,                 # G: fixations forced to every cell of a G×G grid (x, y = linspace(-1, 1, G))
      num_images=8,            # targeted adversarial images (first clean-correct ones of the first batch)
      eps=0.0,                 # ε of their targeted attack; 0 = the largest targeted ε
      chunk=256,               # grid cells per forward pass (memory)
  ))
  a.checks = ml_collections.ConfigDict(dict(
      large_eps=0.1,           # check 2: ε at which accuracy must fall to chance (1/K + chance_tol) or below
      chance_tol=0.02,
      monotone_tol=0.01,       # check 1: accuracy may rise by at most this between consecutive ε
      iteration_factor=2,      # check 3: the attack again with iterations × this ...
      extra_restarts=2,        #          ... and this many more restarts (worst per example)
      convergence_eps=(),      #          at these ε (empty = the middle ε of ``epsilons``)
      convergence_examples=0,  #          on the first N attacked examples (0 = all; whole batches)
      convergence_tol=0.01,    #          robust accuracy must change by less than this (1 point)
      fgsm_tol=0.01,           # check 4: FGSM accuracy >= PGD accuracy − fgsm_tol
      square_queries=1000,     # check 5: Square Attack queries (gradient-free) ...
      square_examples=200,     #          ... on the first N attacked examples (whole batches)
      square_eps=0.0,          #          ... at this ε (0 = the middle ε of ``epsilons``)
      square_tol=0.01,         #          fail if it breaks more than floor(square_tol × N) examples PGD did not
      grad_examples=64,        # check 6: input-gradient norms on the first N examples
      grad_zero_frac=0.1,      #          fail if more than this fraction has a zero gradient at some step
      grad_ratio=1e4,          #          fail if the per-step median margin-gradient norms span more than this
  ))
  if name == "strong":
    a.num_iterations = 100
    a.step_size = 0.1
    a.num_restarts = 2
    a.losses = ("ce", "margin")
    a.horizons = ("step", "avg", "full")
    a.eot_samples = 8
    a.checks.square_queries = 5000
  return a


def adversarial_training(enabled: bool = False, eps: float = 0.0):
  """``config.train.adversarial``: PGD adversarial training (Madry et al. 2018), for every model.

  Each train step replaces the first ``adv_fraction`` of the batch by L∞ PGD examples against the current
  parameters (eval-mode forward: BatchNorm running statistics read, never updated by the attack; argmax
  fixations from the centre), then takes the usual step on that batch (rsrnn_jax/train/loop.py
  ``adversarial_images``). Enable for any config with ``--config.train.adversarial.enabled=True
  --config.train.adversarial.eps=0.03``. The architecture is unchanged: an adversarially trained checkpoint
  is evaluated and attacked like a clean one.
  """
  return ml_collections.ConfigDict(dict(
      enabled=enabled,
      eps=eps,                 # L∞ radius, pixel scale [0, 1] (> 0 when enabled)
      num_iterations=5,        # PGD iterations per train step (cost: about (1 + iterations)× a clean step)
      step_size=0.25,          # PGD step as a fraction of eps (5 × eps/4 reaches the boundary from any start)
      random_start=True,       # uniform random start in the eps-ball
      attack_step=0,           # k: the step whose logits are attacked (0 = train.num_glimpses)
      horizon="step",          # step: logits of step k | avg: mean logits of steps 1..k
      adv_fraction=1.0,        # fraction of each batch replaced by its PGD examples (rest stays clean)
  ))


def get_base_config(data_name: str = "cluttered_fashion_mnist"):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_devices = 0            # 0 = every device of every process; n = the first n (single process)
  # JAX persistent compilation cache (run.py applies it before anything compiles): a directory reused across
  # runs and restarts; "" = off (JAX's JAX_COMPILATION_CACHE_DIR environment variable still works). Only
  # compilations over 1 s are stored (jax_persistent_cache_min_compile_time_secs). docs/scaling.md.
  c.compilation_cache_dir = ""

  # Data fields are documented in rsrnn_jax/data/pipeline.py; mean/std normalise inside the model.
  c.data = data.default_data_config(data_name)
  c.data.mean = (0.5,)
  c.data.std = (0.25,)

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
      rl_center_advantage=True,  # subtract the batch mean of the advantage per step (rsrnn_jax/train/loop.py)
      rl_reward="correct",     # REINFORCE reward per step: correct (1[argmax = y], F1) | prob (p(y), dense)
      log_every=50,
      checkpoint_every=500,
      keep_checkpoints=3,
      eval_at_end=True,
  ))
  c.train.adversarial = adversarial_training()

  c.eval = ml_collections.ConfigDict(dict(
      num_glimpses=16,         # T_eval: may exceed train.num_glimpses
      batch_size=256,
      max_examples=0,          # 0 = the whole eval split
      checkpoint_path="",      # a checkpoint step dir or checkpoints dir to evaluate instead of WORKDIR's
      num_figure_images=8,     # test images in the fixation figure
  ))

  # Adversarial evaluation (--mode=attack, rsrnn_jax/attacks/suite.py); fields documented in attack_profile.
  c.attack = attack_profile("paper")
  return set_model(c, "rsrnn")
