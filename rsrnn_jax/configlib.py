"""Config files and validation: impossible values fail early with one line that says what to change; the config
a training run saves in its workdir (``config.json``, every run of it in ``config_history.jsonl``) and reads back."""
from __future__ import annotations

import datetime
import importlib.util
import json
import math
import os

import ml_collections

from rsrnn_jax import data
from rsrnn_jax import workdir as workdir_lib
from rsrnn_jax.models import registry


def _require(cond: bool, message: str) -> None:
  if not cond:
    raise ValueError(message)


def load_file(spec: str, extra_arg: str = ""):
  """The config of ``FILE[:ARGS]`` as launch.py reads it (``configs/demo.py:model=ff_cnn``): ``get_config(ARGS)``
  of the Python file FILE, with ``extra_arg`` (e.g. ``"model=dram"``) appended to ARGS. The library reads
  config files only when a caller names them; it never imports ``configs/``."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"no config file {path!r} (relative to {os.getcwd()}); give the path of a config such as "
                     f"configs/demo.py")
  module_spec = importlib.util.spec_from_file_location("rsrnn_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(",".join(a for a in (arg, extra_arg) if a))


def set_dotted(c, overrides: dict):
  """Sets dotted keys (``{"train.batch_size": 4}``) on config ``c``; returns it."""
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = value
  return c


def _non_finite(node, prefix: str = "config"):
  """(dotted name, value) of the first NaN/±Inf float anywhere in a config (sequences included), or None."""
  items = node.items() if hasattr(node, "items") else enumerate(node) if isinstance(node, (list, tuple)) else ()
  for key, value in items:
    name = f"{prefix}.{key}" if not isinstance(key, int) else f"{prefix}[{key}]"
    if isinstance(value, float) and not math.isfinite(value):
      return name, value
    found = _non_finite(value, name) if not isinstance(value, (str, bytes)) else None
    if found:
      return found
  return None


def validate(config) -> None:
  """Raises ValueError with a one-line message for the first impossible value in ``config``."""
  bad = _non_finite(config)
  _require(bad is None, f"{bad[0]} must be a finite number, got {bad[1]!r}" if bad else "")
  t, m, e = config.train, config.model, config.eval
  _require(m.name in registry.names(),
           f"config.model.name={m.name!r} is unknown; choose one of {', '.join(registry.names())}")
  for key in ("batch_size", "num_train_steps", "num_glimpses", "log_every", "checkpoint_every",
              "keep_checkpoints"):
    _require(int(t[key]) > 0, f"config.train.{key} must be a positive integer, got {t[key]!r}")
  _require(int(t.warmup_steps) >= 0, f"config.train.warmup_steps must be >= 0, got {t.warmup_steps!r}")
  _require(float(t.learning_rate) > 0, f"config.train.learning_rate must be > 0, got {t.learning_rate!r}")
  for key in ("weight_decay", "grad_clip", "rl_weight", "baseline_weight"):
    _require(float(t[key]) >= 0, f"config.train.{key} must be >= 0, got {t[key]!r}")
  _require(0 <= float(t.momentum) < 1, f"config.train.momentum must be in [0, 1), got {t.momentum!r}")
  _require(all(float(v) > 0 for v in config.data.get("std", (1.0,))),
           f"config.data.std must be > 0 per channel, got {config.data.get('std')!r}")
  _require(t.loss_steps in ("all", "last"), f"config.train.loss_steps must be 'all' or 'last', got {t.loss_steps!r}")
  _require(t.init_fixation in ("random", "center"),
           f"config.train.init_fixation must be 'random' or 'center', got {t.init_fixation!r}")
  _require(t.rl_reward in ("correct", "prob"),
           f"config.train.rl_reward must be 'correct' or 'prob', got {t.rl_reward!r}")
  _require(t.optimizer in ("adamw", "sgd"), f"config.train.optimizer must be 'adamw' or 'sgd', got {t.optimizer!r}")
  _require(t.schedule in ("cosine", "step"), f"config.train.schedule must be 'cosine' or 'step', got {t.schedule!r}")
  _require(t.get("nonfinite", "stop") in ("stop", "skip"),
           f"config.train.nonfinite must be 'stop' or 'skip', got {t.get('nonfinite')!r}")
  _validate_adversarial(config)
  for key in ("num_glimpses", "batch_size"):
    _require(int(e[key]) > 0, f"config.eval.{key} must be a positive integer, got {e[key]!r}")
  _require(int(e.max_examples) >= 0, f"config.eval.max_examples must be >= 0, got {e.max_examples!r}")
  _require(int(config.num_devices) >= 0, f"config.num_devices must be >= 0, got {config.num_devices!r}")
  _require(m.dtype in ("float32", "bfloat16"), f"config.model.dtype must be 'float32' or 'bfloat16', got {m.dtype!r}")
  _require(m.norm in ("batch", "group", "none"), f"config.model.norm must be batch, group or none, got {m.norm!r}")
  s = m.sampler
  _require(s.kind in ("retina", "crop"), f"config.model.sampler.kind must be 'retina' or 'crop', got {s.kind!r}")
  _require(int(s.out_size) >= 4, f"config.model.sampler.out_size must be >= 4, got {s.out_size!r}")
  _require(float(s.density_ratio) > 1, f"config.model.sampler.density_ratio (the paper's b) must be > 1, "
           f"got {s.density_ratio!r}")
  _require(len(s.scales) > 0 and all(0 < float(v) <= 4 for v in s.scales),
           f"config.model.sampler.scales must be fractions of the image side in (0, 4], got {s.scales!r}")
  _require(m.core in ("conv_gru", "gru"), f"config.model.core must be 'conv_gru' or 'gru', got {m.core!r}")
  for key in ("encoder1", "encoder2", "stages"):
    for stage in m[key]:
      _require(len(stage) == 3 and int(stage[0]) > 0 and int(stage[1]) >= 0 and int(stage[2]) in (0, 1),
               f"config.model.{key} stages must be (features>0, convs>=0, pool 0|1), got {tuple(stage)!r}")
  if m.core == "conv_gru":
    pools = sum(int(st[2]) for st in m.encoder1)
    _require(int(s.out_size) // 2 ** pools >= 1,
             f"config.model.sampler.out_size={s.out_size} is too small for {pools} pooling stages")
  _require(m.core == "conv_gru" or not m.encoder2,
           f"config.model.encoder2 must be empty with the 1-D core (core='gru'), got {tuple(m.encoder2)!r}")
  _require(int(m.core_features) > 0, f"config.model.core_features must be > 0, got {m.core_features!r}")
  for key in ("heads", "key_features", "value_features", "basis_size"):
    value = m.get("attention", {}).get(key, 1)
    _require(int(value) > 0, f"config.model.attention.{key} must be a positive integer, got {value!r}")
  _require(int(m.ior_size) >= 2, f"config.model.ior_size must be >= 2, got {m.ior_size!r}")
  d = m.dorsal
  _require(int(d.saliency_size) >= 2, f"config.model.dorsal.saliency_size must be >= 2, got {d.saliency_size!r}")
  _require(0 < float(d.sigma_min) < float(d.sigma_init),
           f"config.model.dorsal needs 0 < sigma_min < sigma_init, got {d.sigma_min!r}, {d.sigma_init!r}")
  _require(0.0 <= float(d.ior_floor) < 1.0,
           f"config.model.dorsal.ior_floor must be in [0, 1), got {d.ior_floor!r}")
  _require(d.combine in ("log", "product"),
           f"config.model.dorsal.combine must be 'log' or 'product' (the paper's S*M), got {d.combine!r}")


def _validate_adversarial(config) -> None:
  a = config.train.adversarial
  if not a.enabled:
    return
  _require(not data.is_multi_label(config.data), f"config.train.adversarial needs single-label data (the PGD "
           f"loss is the cross-entropy of one true class); {config.data.name} is multi-label")
  _require(float(a.eps) > 0, f"config.train.adversarial.eps must be > 0 when adversarial training is enabled, "
           f"got {a.eps!r}")
  _require(int(a.num_iterations) >= 1,
           f"config.train.adversarial.num_iterations must be >= 1, got {a.num_iterations!r}")
  _require(float(a.step_size) > 0, f"config.train.adversarial.step_size must be > 0 (a fraction of eps), "
           f"got {a.step_size!r}")
  _require(a.horizon in ("step", "avg"), f"config.train.adversarial.horizon must be 'step' or 'avg', "
           f"got {a.horizon!r}")
  k = int(a.attack_step)
  _require(0 <= k <= int(config.train.num_glimpses), f"config.train.adversarial.attack_step must be in "
           f"[0, train.num_glimpses={config.train.num_glimpses}] (0 = the last step), got {a.attack_step!r}")
  _require(0 < float(a.adv_fraction) <= 1, f"config.train.adversarial.adv_fraction must be in (0, 1], "
           f"got {a.adv_fraction!r}")


# ----------------------------------------------------------------------------------------- the saved config

CONFIG = "config.json"
CONFIG_HISTORY = "config_history.jsonl"
_CONFIG_SECTIONS = ("model", "train", "eval", "data")


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (``WORKDIR/config.json``, written by ``--mode=train``); a file that
  cannot be parsed is a UserError naming it."""
  path = os.path.join(workdir, CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist; pass a workdir made by --mode=train (or config=)")
  fix = (f"restore it (every training run's config is a line of {os.path.join(workdir, CONFIG_HISTORY)}) or "
         f"pass config=")
  try:
    with open(path, "rb") as f:
      d = json.loads(f.read().decode("utf-8"))
  except (UnicodeDecodeError, ValueError) as e:
    raise workdir_lib.UserError(f"cannot parse {path} ({workdir_lib.one_line(e, 120)}): it is damaged or half-written; "
                                f"{fix}") from None
  missing = [k for k in _CONFIG_SECTIONS if not isinstance(d, dict) or not isinstance(d.get(k), dict)]
  if missing:
    raise workdir_lib.UserError(f"{path} is not a config written by --mode=train (no {', '.join(missing)} section); {fix}")
  return ml_collections.ConfigDict(_tuples(d))


def record_config(workdir: str, config: dict, *, step: int) -> str | None:
  """``config.json`` := ``config`` (atomically), for a run that has started training at ``step``; the run is
  appended to ``config_history.jsonl``. Returns the text ``config.json`` had before (None: there was none), for
  :func:`restore_config`."""
  path = os.path.join(workdir, CONFIG)
  previous = open(path).read() if os.path.isfile(path) else None
  workdir_lib.write_json(path, config)
  _append_history(workdir, {"event": "started", "step": int(step), "config": config})
  return previous


def restore_config(workdir: str, previous: str | None, *, event: str, step: int) -> None:
  """Puts back the ``config.json`` that :func:`record_config` replaced (a diverged run leaves the last good
  config; with none before, the run's own stays) and records ``event`` in the history."""
  if previous is not None:
    workdir_lib.write_text(os.path.join(workdir, CONFIG), previous)
  _append_history(workdir, {"event": event, "step": int(step), "config_json": "restored the previous one"
                            if previous is not None else "kept (there was no previous one)"})


def _append_history(workdir: str, record: dict) -> None:
  record = {"time": datetime.datetime.now().isoformat(timespec="seconds"), **record}
  with open(os.path.join(workdir, CONFIG_HISTORY), "a") as f:
    f.write(workdir_lib.dumps(record) + "\n")


def _tuples(obj):
  """JSON lists back to the tuples the configs use (stages, scales, ε grids)."""
  if isinstance(obj, dict):
    return {k: _tuples(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return tuple(_tuples(v) for v in obj)
  return obj
