"""The model and dataset registries (rsrnn_jax/models/registry.py, rsrnn_jax/data/registry.py): what every
module reads from them, and a toy model added through the model registry alone, run through train, eval and
the attack suite."""
import json
import os

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from rsrnn_jax import configlib, data, models, run
from rsrnn_jax.data import registry as datasets
from rsrnn_jax.models import registry
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------- the zoo

def test_every_model_and_variant_is_registered_once_with_what_the_modules_read():
  assert registry.names() == models.MODELS
  assert set(registry.names()) < set(registry.variant_names())
  assert registry.variant(registry.DEFAULT_MODEL).model == registry.DEFAULT_MODEL
  for name in registry.variant_names():
    v = registry.variant(name)
    entry = registry.get(v.model)
    m = registry.preset(v.model)
    assert m.name == v.model and v.display and v.paper_key
    assert set(registry.describe(m)) == {"input", "gru", "attention"}
    assert registry.train_fields(v.model).keys() == registry.TRAIN_FIELDS.keys()
    assert entry.whole_image == (not entry.has_fixations)  # the paper's zoo: overt attention or whole image
  adversarial = [n for n in registry.variant_names() if registry.variant(n).adversarial]
  assert [registry.variant(n).model for n in adversarial] == [n for n in registry.names()
                                                             if not registry.get(n).is_recurrent]
  with pytest.raises(ValueError, match="unknown model 'resnet'; choose one of"):
    registry.get("resnet")
  with pytest.raises(ValueError, match="already registered"):
    registry.register(registry.get(registry.DEFAULT_MODEL))


def test_variants_set_the_recipe_in_the_configs():
  for name in registry.variant_names():
    v = registry.variant(name)
    c = demo.get_config(f"model={name}")
    assert c.model.name == v.model and bool(c.train.adversarial.enabled) == v.adversarial
    configlib.validate(c)


def test_no_model_name_is_spelled_outside_the_registry():
  """The acceptance grep of issue 11: model names appear only in the registry, the model files, and the configs'
  docstrings (tests and benches may name the models they run)."""
  names = registry.variant_names()
  allowed = {os.path.join("rsrnn_jax", "models", "registry.py")}
  found = []
  for folder in ("rsrnn_jax", "configs"):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
      for f in files:
        path = os.path.relpath(os.path.join(root, f), REPO)
        if not f.endswith(".py") or path in allowed:
          continue
        text = open(os.path.join(REPO, path)).read()
        if path.startswith("configs"):  # the docstring may list the choices
          text = text.split('"""', 2)[-1]
        found += [f"{path}: {n}" for n in names if f'"{n}"' in text or f"'{n}'" in text]
  assert not found, found


# ---------------------------------------------------------------------------------------------- datasets

def test_dataset_registry_agrees_with_the_builders(tmp_path):
  for name in datasets.names():
    entry = datasets.get(name)
    cfg = data.default_data_config(name)
    builder = entry.build(cfg, tmp_path)  # not prepared: the metadata only
    label = builder.info.features["label"]
    names = label.feature.names if hasattr(label, "feature") else label.names
    assert len(names) == entry.num_classes == data.num_classes(cfg), name
    assert data.image_shape(cfg) == (cfg[entry.side_field],) * 2 + (entry.channels,)
    assert data.is_multi_label(cfg) == entry.multi_label
  assert data.num_classes(data.default_data_config("coco_multilabel")) == 80
  with pytest.raises(ValueError, match="unknown dataset 'cifar10'; choose one of"):
    data.default_data_config("cifar10")


def test_labels_multi_hot_and_local_batch_size():
  assert datasets.labels_multi_hot(np.zeros((4, 3))) and not datasets.labels_multi_hot(np.zeros(4))
  assert data.local_batch_size(64, 1, 2, num_devices=4) == 32
  with pytest.raises(ValueError, match="not divisible by the 4 devices; use a multiple of 4"):
    data.local_batch_size(6, num_devices=4)
  with pytest.raises(ValueError, match="not divisible by process_count 4"):
    data.local_batch_size(6, 0, 4)


def test_compute_reads_classes_and_shapes_from_the_registry_and_config_files(capsys):
  from rsrnn_jax.evaluation import compute
  missing = os.path.join(REPO, "configs", "nope.py")
  assert compute.main([f"--config={missing}", "--models=ff_cnn"]) == 2
  assert f"no config file {missing!r}" in capsys.readouterr().err
  c = configlib.load_file(os.path.join(REPO, "configs", "coco.py"), "model=ff_cnn")
  assert c.data.name == "coco_multilabel" and c.model.name == "ff_cnn"


# ----------------------------------------------------------------------------- a toy model, registry only

class ToyRNN(nn.Module):
  """Whole image → 8×8 average pool → Dense → a GRU over steps (the same input each step) → logits."""
  num_classes: int
  features: int = 8
  norm: str = "none"
  mean: tuple = (0.5,)
  std: tuple = (0.25,)
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, images, *, num_steps: int, train: bool, sample_fixations=None, fixations=None,
               fixation_mask=None, init_fixations=None):
    del train, sample_fixations, fixations, fixation_mask, init_fixations
    x = (images - jnp.asarray(self.mean)) / jnp.asarray(self.std)
    x = nn.avg_pool(x, (8, 8), (8, 8)).reshape(images.shape[0], -1)
    x = nn.relu(nn.Dense(self.features, name="encoder")(x))
    cell, head = nn.GRUCell(self.features, name="core"), nn.Dense(self.num_classes, name="classifier")
    h, logits = jnp.zeros((images.shape[0], self.features)), []
    for _ in range(num_steps):
      h, _ = cell(h, x)
      logits.append(head(h))
    return {"logits": jnp.stack(logits)}


def _toy_preset(m, stages):
  del stages
  m.norm = "none"
  m.toy_features = 8  # a field of its own


@pytest.fixture
def toy_model():
  entry = registry.register(registry.ModelEntry(
      name="toy_rnn", display="Toy-RNN", preset=_toy_preset,
      build=lambda model_cfg, **common: ToyRNN(features=int(model_cfg.toy_features), **common),
      describe=lambda model_cfg: {"input": "Whole Image", "gru": "1D", "attention": "-"},
      whole_image=True, train_defaults={"loss_steps": "last"}))
  yield entry
  registry.unregister(entry.name)


def _toy_config(tiny_data):
  c = tiny_config("toy_rnn", **{"data.source_dir": tiny_data["source_dir"], "data.data_dir": tiny_data["data_dir"]})
  a = c.attack
  a.attack_step, a.eval_steps = 2, 4
  a.epsilons, a.targeted_epsilons = (0.1,), (0.1,)
  a.num_examples, a.batch_size, a.num_iterations = 8, 8, 2
  a.prob_map.num_images = 0
  a.checks.large_eps, a.checks.square_queries, a.checks.grad_examples = 0.0, 0, 0
  a.checks.iteration_factor, a.checks.extra_restarts, a.checks.convergence_examples = 1, 0, 8
  return c


@pytest.mark.slow
def test_a_toy_model_added_through_the_registry_trains_evaluates_and_is_attacked(toy_model, tiny_data, tmp_path):
  c = _toy_config(tiny_data)
  assert c.model.name == "toy_rnn" and c.train.loss_steps == "last" and c.model.toy_features == 8
  assert models.is_recurrent(c.model) and not models.has_fixations(c.model)
  workdir = str(tmp_path / "toy")
  run.main(c, workdir, "train")
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert lines and "policy_loss" not in lines[-1]  # no fixations: no REINFORCE
  results = run.main(c, workdir, "eval")
  assert len(results["accuracy_per_step"]) == c.eval.num_glimpses and results["model"] == "toy_rnn"
  assert not os.path.exists(os.path.join(workdir, "eval", "fixations.png"))
  attacked = run.main(c, workdir, "attack")
  with open(os.path.join(workdir, "attack_paper", "results.json")) as f:
    saved = json.load(f)
  assert saved["checkpoint_step"] == c.train.num_train_steps and not saved.get("prob_maps")
  steps = saved["untargeted"]["attacks"]["pgd_step"][0]["adv_acc"]
  assert len(steps) == 4 and all(0.0 <= v <= 1.0 for v in steps)
  assert "pgd_full" in saved["untargeted"]["attacks"]  # recurrent: the full-horizon objective runs too
  assert attacked["timing"]["total_s"] > 0
  # The model's compute and Table-1 description come from the same entry.
  from rsrnn_jax.evaluation import compute
  row = compute.model_compute(c)
  assert row["model"] == "toy_rnn" and row["gmacs_per_step"] > 0
  assert registry.describe(c.model)["input"] == "Whole Image"
