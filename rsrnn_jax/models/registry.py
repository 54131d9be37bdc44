"""The model registry: one entry per model; everything that knows a model by name reads it from here.

An entry (:class:`ModelEntry`) holds the model's name and display name, its builder (config → Flax module),
its preset (the model's ``config.model`` fields), what it outputs (fixations? per-step answers?), its Table-1
description for the reproduction report, its key in ``rsrnn_jax/reproduction/paper_numbers.py`` and the
training fields it owns (S3TA trains on the last step only). A :class:`Variant` is a named training recipe of a
registered model: every model is a variant of itself, and ``ff_cnn_at`` is FF-CNN with PGD adversarial training.

Adding a model = one module in ``rsrnn_jax/models/`` (a Flax module with the call signature and outputs of
``rsrnn_jax/models/__init__.py``) + one :func:`register` call here (or in the caller, e.g. a test). Configs, the
config validation, training, evaluation, the attack suite, ``evaluation.compute`` and the reproduction read it.

The models of the paper (docs/zoo.md), on the shared backbone ``stages`` (:func:`vgg8` by default):

  rsrnn        retina → Encoder1 (stages 1–3) → ConvGRU → Encoder2 (stage 4), dorsal stream  (GlimpseRNN)
  base_retina  retina → all stages → 1-D GRU, the same dorsal stream                        (GlimpseRNN)
  dram         two crops (0.25, 0.5 of the side) → all stages per crop → 1-D GRU, dorsal    (GlimpseRNN)
  gfnet_m      one crop (0.25) → all stages → 1-D GRU, dorsal stream                        (GlimpseRNN)
  s3ta         whole image → stages once → keys/values + spatial basis; LSTM queries        (S3TA)
  ff_cnn       whole image → stages → classifier                                            (FeedForwardCNN)
  ff_cnn_at    variant: ff_cnn with PGD adversarial training (the configs choose ε)
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping

import ml_collections

from rsrnn_jax.models.ff_cnn import FeedForwardCNN
from rsrnn_jax.models.glimpse import GlimpseRNN
from rsrnn_jax.models.s3ta import S3TA
from rsrnn_jax.models.samplers import make_sampler

# Training fields that belong to the model, with their default: every model sets each of them (its
# ``train_defaults`` value, else this one), so switching models never keeps the previous model's value.
TRAIN_FIELDS = {"loss_steps": "all"}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  """One model. ``build(model_cfg, *, num_classes, norm, mean, std, dtype)`` returns its Flax module;
  ``preset(m, stages)`` sets its fields on the shared ones of :func:`preset` (a ConfigDict, changed in place);
  ``describe(model_cfg_dict)`` gives the paper's Table-1 columns {"input", "gru", "attention"}."""
  name: str                            # config.model.name, the configs' model=NAME
  display: str                         # its name in reports and figures
  build: Callable[..., Any]
  preset: Callable[[ml_collections.ConfigDict, tuple], None]
  describe: Callable[[Mapping], dict]
  has_fixations: bool = False          # overt attention: fixations, REINFORCE, fixation figures, probability maps
  is_recurrent: bool = True            # the answer changes with the step (per-step attack horizons make sense)
  whole_image: bool = False            # sees the whole image at once (the configs keep BatchNorm, 224² input)
  paper_key: str | None = None         # key in reproduction/paper_numbers.PAPER; None: not in the paper
  train_defaults: Mapping = dataclasses.field(default_factory=dict)  # TRAIN_FIELDS values of this model


@dataclasses.dataclass(frozen=True)
class Variant:
  """A named training recipe of a registered model (the configs' ``model=NAME``, the reproduction's runs)."""
  name: str
  model: str                           # the ModelEntry it trains (config.model.name)
  display: str
  paper_key: str | None = None
  adversarial: bool = False            # PGD adversarial training (the config chooses ε)


_MODELS: dict[str, ModelEntry] = {}
_VARIANTS: dict[str, Variant] = {}


def register(entry: ModelEntry) -> ModelEntry:
  """Adds ``entry`` (and the variant of the same name); a name can be registered once."""
  if entry.name in _VARIANTS:
    raise ValueError(f"model {entry.name!r} is already registered")
  _MODELS[entry.name] = entry
  _VARIANTS[entry.name] = Variant(entry.name, entry.name, entry.display, entry.paper_key)
  return entry


def register_variant(variant: Variant) -> Variant:
  if variant.name in _VARIANTS:
    raise ValueError(f"variant {variant.name!r} is already registered")
  get(variant.model)
  _VARIANTS[variant.name] = variant
  return variant


def unregister(name: str) -> None:
  """Removes a model and its variants, or one variant (tests that register toy models clean up with it)."""
  _MODELS.pop(name, None)
  for key in [k for k, v in _VARIANTS.items() if name in (k, v.model)]:
    del _VARIANTS[key]


def names() -> tuple[str, ...]:
  """Registered models (valid ``config.model.name`` values), in registration order."""
  return tuple(_MODELS)


def variant_names() -> tuple[str, ...]:
  """Every variant (each model and the extra recipes such as ``ff_cnn_at``), in registration order."""
  return tuple(_VARIANTS)


def get(name: str) -> ModelEntry:
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_MODELS)}")
  return _MODELS[name]


def variant(name: str) -> Variant:
  if name not in _VARIANTS:
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_VARIANTS)}")
  return _VARIANTS[name]


def entry_of(model_cfg) -> ModelEntry:
  """The entry of a ``config.model`` (ConfigDict or dict)."""
  return get(model_cfg["name"])


# ---------------------------------------------------------------------------------------------------------
# Presets: the shared fields, then each model's own.


def vgg8(width: int = 64):
  """The shared backbone as (features, convs, pool) stages: VGG-8 64-128-256-512 at width 64 (paper.md §4)."""
  w = width
  return ((w, 2, 1), (2 * w, 2, 1), (4 * w, 2, 1), (8 * w, 2, 0))


def preset(name: str, *, width: int = 64, stages=None, out_size: int = 64, density_ratio: float = 10.0):
  """``config.model`` for model ``name`` (docs/zoo.md), every model built from the same backbone ``stages``.

  ``stages`` (default :func:`vgg8` at ``width``) is split per model: RS-RNN runs its first three stages as
  Encoder1 and the rest as Encoder2 around the ConvGRU; the 1-D baselines run all of them on each glimpse,
  then a GRU on the pooled features; FF-CNN and S3TA run them on the whole image. Every model has every
  shared field (checkpoints record them); the entry's preset changes what its model uses.
  """
  entry = get(name)
  stages = tuple(tuple(s) for s in (stages or vgg8(width)))
  m = ml_collections.ConfigDict()
  m.name = name
  m.dtype = "float32"          # compute dtype: float32 | bfloat16 (params and optimiser state stay float32)
  m.norm = "group"             # batch | group | none (GroupNorm keeps the scan carry free of batch stats)
  m.unroll = -1                # nn.scan unroll: -1 = auto (full to train, rolled to evaluate/attack: layers.scan_unroll);
                               # 0 = full; n = n steps per loop trip
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
  entry.preset(m, stages)
  return m


def train_fields(name: str) -> dict:
  """The model-owned ``config.train`` fields of model ``name`` (TRAIN_FIELDS with its own values)."""
  return {**TRAIN_FIELDS, **get(name).train_defaults}


def describe(model_cfg) -> dict:
  """Input type, GRU type and attention type of a model config, in the words of the paper's Table 1."""
  return entry_of(model_cfg).describe(model_cfg)


def _retina_2d(m, stages):
  del m, stages  # the shared fields are RS-RNN's


def _one_d_core(m, stages, *, crops=None):
  """1-D GRU on the pooled ventral features of every stage; ``crops``: crop sampler at these scales."""
  m.encoder1, m.encoder2 = stages, ()
  m.core = "gru"
  m.core_features = stages[-1][0]
  m.glance = True              # the dorsal stream looks at the whole image once (GlimpseRNN, docs/zoo.md)
  m.glance_norm = True         # GroupNorm on the glance's features (docs/zoo.md § the glance's saliency scale)
  if crops:
    m.sampler.kind = "crop"
    m.sampler.scales = crops


def _whole_image(m, stages, *, attention: bool = False):
  m.norm = "batch"             # the backbone runs once, outside the recurrence: BatchNorm as in the paper
  if attention:
    m.core_features = stages[-1][0]  # LSTM units
    # Keys/values from the backbone + a fixed cosine spatial basis, one LSTM query per head
    # (rsrnn_jax/models/s3ta.py). Only in this preset: checkpoints record the model fields.
    m.attention = ml_collections.ConfigDict(dict(
        heads=2,                 # attention heads (the authors' run name `head2`)
        key_features=stages[0][0],      # 1×1-conv key channels (before the basis is appended)
        value_features=stages[-2][0],   # 1×1-conv value channels (before the basis is appended)
        basis_size=8,            # U = V: cos(πu·y)·cos(πv·x), u, v < basis_size → basis_size² channels
    ))


# ---------------------------------------------------------------------------------------------------------
# Builders and Table-1 descriptions.


def _stages(spec):
  return tuple(tuple(int(v) for v in stage) for stage in spec)


def _build_glimpse(model_cfg, **common):
  return GlimpseRNN(
      sampler=make_sampler(model_cfg.sampler), encoder1=_stages(model_cfg.encoder1), core=model_cfg.core,
      core_features=int(model_cfg.core_features), encoder2=_stages(model_cfg.encoder2),
      dorsal=dict(model_cfg.dorsal.to_dict()), ior_size=int(model_cfg.ior_size),
      glance=bool(model_cfg.get("glance", False)), glance_norm=bool(model_cfg.get("glance_norm", False)),
      unroll=int(model_cfg.unroll), remat=bool(model_cfg.remat), **common)


def _build_s3ta(model_cfg, **common):
  a = model_cfg.attention
  return S3TA(stages=_stages(model_cfg.stages), core_features=int(model_cfg.core_features),
              heads=int(a.heads), key_features=int(a.key_features), value_features=int(a.value_features),
              basis_size=int(a.basis_size), unroll=int(model_cfg.unroll),
              input_size=int(model_cfg.get("input_size", 0)), **common)


def _build_ff_cnn(model_cfg, **common):
  return FeedForwardCNN(stages=_stages(model_cfg.stages), input_size=int(model_cfg.get("input_size", 0)), **common)


def _describe_glimpse(model_cfg) -> dict:
  s = model_cfg["sampler"]
  if s["kind"] == "retina":
    kind = "Retinal Image"
  else:
    kind = {1: "Single Patch", 2: "Double Patch"}.get(len(s["scales"]), f"{len(s['scales'])} Patches")
  return {"input": kind, "gru": "2D" if model_cfg["core"] == "conv_gru" else "1D", "attention": "Overt"}


def _fixed(**columns):
  return lambda model_cfg: dict(columns)


_glimpse = functools.partial(ModelEntry, build=_build_glimpse, describe=_describe_glimpse, has_fixations=True)
register(_glimpse(name="rsrnn", display="RS-RNN", preset=_retina_2d, paper_key="RS-RNN"))
register(_glimpse(name="base_retina", display="Base-Retina", preset=_one_d_core, paper_key="Base-Retina"))
register(_glimpse(name="dram", display="DRAM", paper_key="DRAM",
                  preset=functools.partial(_one_d_core, crops=(0.25, 0.5))))
register(_glimpse(name="gfnet_m", display="GF-Net-m", paper_key="GF-Net-m",
                  preset=functools.partial(_one_d_core, crops=(0.25,))))
register(ModelEntry(
    name="s3ta", display="S3TA", build=_build_s3ta, preset=functools.partial(_whole_image, attention=True),
    describe=_fixed(input="Whole Image", gru="1D (LSTM)", attention="Covert"), whole_image=True,
    paper_key="S3TA",
    train_defaults={"loss_steps": "last"}))  # the authors' run name `s3TA_lastStepLoss_...` (paper.md §5)
register(ModelEntry(
    name="ff_cnn", display="FF-CNN", build=_build_ff_cnn, preset=_whole_image,
    describe=_fixed(input="Whole Image", gru="-", attention="-"), is_recurrent=False, whole_image=True,
    paper_key="FF-CNN"))
# The paper's FF-CNN-AT (v1 Fig. 4a; recipe not given): FF-CNN with PGD adversarial training.
register_variant(Variant(name="ff_cnn_at", model="ff_cnn", display="FF-CNN-AT", paper_key="FF-CNN-AT",
                         adversarial=True))

DEFAULT_MODEL = "rsrnn"  # the configs' default model; the reproduction report animates its glimpses
TRANSFER_SOURCE = "ff_cnn"  # the reproduction's black-box check: the transfer attack's source model
