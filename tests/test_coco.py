"""MS-COCO multi-label: the metrics (hand-computed), the ``coco_multilabel`` builder from fake manual zips, the
pipeline, the sigmoid loss, and configs/coco.py trained and evaluated end to end (nothing is downloaded)."""
import io
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import coco as coco_config
from rsrnn_jax import data, run
from rsrnn_jax.evaluation import multilabel
from rsrnn_jax.robustness import profiles as attack_profiles
from rsrnn_jax.train import losses as train_losses
from rsrnn_jax.data import coco
from tests.helpers import override, tiny_config

# Fake COCO: (split, image id, size, category ids); one train image has no annotation, one is grey.
FAKE = {"train": [(9, (40, 30), [1, 18, 18]), (3, (32, 48), [90]), (5, (36, 36), []), (7, (30, 44), [3, 1])],
        "validation": [(42, (48, 32), [1, 3]), (8, (40, 40), [62])]}


def _jpeg(rng, size, mode="RGB") -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(buf, "JPEG")
  return buf.getvalue()


def write_fake_coco(manual_dir, *, skip=()):
  """The three COCO-2014 zips with FAKE's images and instance annotations (all 80 real categories)."""
  rng = np.random.default_rng(0)
  os.makedirs(manual_dir, exist_ok=True)
  categories = [{"id": i, "name": n, "supercategory": "x"} for i, n in zip(coco.CATEGORY_IDS, coco.CLASS_NAMES)]
  with zipfile.ZipFile(os.path.join(manual_dir, coco.ANNOTATIONS_ZIP), "w") as ann:
    for split, folder in coco.SPLIT_DIRS.items():
      images, annotations = [], []
      with zipfile.ZipFile(os.path.join(manual_dir, f"{folder}.zip"), "w") as zf:
        for image_id, size, cats in FAKE[split]:
          name = f"COCO_{folder}_{image_id:012d}.jpg"
          zf.writestr(f"{folder}/{name}", _jpeg(rng, size, "L" if image_id == 3 else "RGB"))
          images.append({"id": image_id, "file_name": name, "width": size[0], "height": size[1]})
          annotations += [{"id": 100 * image_id + j, "image_id": image_id, "category_id": c}
                          for j, c in enumerate(cats)]
      ann.writestr(f"annotations/instances_{folder}.json",
                   json.dumps({"images": images, "annotations": annotations, "categories": categories}))
  for name in skip:
    os.remove(os.path.join(manual_dir, name))


def _expected(split):
  ids = sorted(FAKE[split])
  return [coco.multi_hot([coco.CATEGORY_IDS.index(c) for c in set(cats)]) for _, _, cats in ids]


@pytest.fixture(scope="module")
def coco_cfg(tmp_path_factory):
  root = tmp_path_factory.mktemp("coco")
  write_fake_coco(root / "manual")
  cfg = data.default_data_config("coco_multilabel")
  cfg.data_dir, cfg.manual_dir = str(root / "data"), str(root / "manual")
  cfg.image_size, cfg.eval_resize, cfg.num_workers, cfg.prefetch = 24, 24, 0, 0
  return cfg


# ------------------------------------------------------------------------------------------------- metrics

def test_metrics_match_a_hand_computed_example():
  # 4 images, 3 classes; logits > 0 <=> probability > 0.5 is a positive prediction.
  labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
  logits = np.array([[2.0, -1.0, 0.5], [1.0, 3.0, -2.0], [-0.5, 0.2, 1.0], [-3.0, -1.0, -1.0]])
  m = multilabel.metrics(logits, labels)
  # AP, class 0: scores 2 (+), 1 (-), -.5 (+), -3 (-): precision at the positives 1/1, 2/3 -> (1 + 2/3)/2.
  # class 1: 3 (+), .2 (+), -1 (-), -1 (-): 1. class 2: 1 (-), .5 (+), -1, -2: 1/2.
  np.testing.assert_allclose(m["AP"], [5 / 6, 1.0, 0.5])
  np.testing.assert_allclose(m["mAP"], (5 / 6 + 1.0 + 0.5) / 3)
  # Predictions: class 0 -> images {0, 1}: TP 1, FP 1, FN 1; class 1 -> {1, 2}: TP 2; class 2 -> {0, 2}:
  # TP 1, FP 1. CP = mean(1/2, 1, 1/2), CR = mean(1/2, 1, 1), OP = 4/6, OR = 4/5.
  cp, cr, op, orc = 2 / 3, 5 / 6, 4 / 6, 4 / 5
  want = {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr), "OP": op, "OR": orc, "OF1": 2 * op * orc / (op + orc)}
  for k, v in want.items():
    np.testing.assert_allclose(m[k], v, err_msg=k)


def test_average_precision_ties_and_classes_without_positives():
  # Tied scores count as one threshold (all-or-nothing): class 0 = 2 tied images, one positive -> AP = 1/2.
  m = multilabel.metrics(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([[1, 0], [0, 0]]))
  np.testing.assert_allclose(m["AP"], [0.5, np.nan])
  np.testing.assert_allclose(m["mAP"], 0.5)  # a class without positives is left out of the mean
  assert m["num_classes_with_positives"] == 1
  # No positive prediction anywhere: precisions count as 0 (as the authors' code), no NaN.
  none = multilabel.metrics(-np.ones((2, 2)), np.array([[1, 0], [0, 1]]))
  assert none["CP"] == none["OP"] == none["CF1"] == none["OF1"] == 0.0


def test_sigmoid_loss_and_per_example_f1():
  logits = jnp.array([[[2.0, -1.0, 0.0]], [[-2.0, 1.0, 0.0]]])  # T=2, B=1, K=3
  labels = jnp.array([[1, 0, 0]])
  sp = lambda z: np.log1p(np.exp(z))  # noqa: E731  BCE(z, 1) = sp(-z), BCE(z, 0) = sp(z)
  step1 = (sp(-2.0) + sp(-1.0) + sp(0.0)) / 3
  step2 = (sp(2.0) + sp(1.0) + sp(0.0)) / 3
  np.testing.assert_allclose(train_losses.classification_loss(logits, labels, jnp.ones(1)), (step1 + step2) / 2,
                             rtol=1e-6)
  np.testing.assert_allclose(train_losses.classification_loss(logits, labels, jnp.ones(1), "last"), step2, rtol=1e-6)
  # Step 1 predicts {0} = truth: F1 1; step 2 predicts {1}: F1 0. Nothing true, nothing predicted: 1.
  np.testing.assert_allclose(train_losses.step_rewards(logits, labels), [[1.0], [0.0]])
  np.testing.assert_allclose(train_losses.step_rewards(-jnp.ones((1, 1, 3)), jnp.zeros((1, 3), jnp.int32)), [[1.0]])


# ------------------------------------------------------------------------------------- builder and pipeline

def test_builder_and_pipeline_from_fake_zips(coco_cfg):
  info = data.dataset_info(coco_cfg)
  assert info.multi_label and info.num_classes == 80 and info.class_names == coco.CLASS_NAMES
  assert (info.num_train, info.num_eval, info.image_shape) == (4, 2, (24, 24, 3))
  (batch,) = list(data.eval_batches(coco_cfg, global_batch_size=4))
  assert batch["image"].shape == (4, 24, 24, 3) and batch["label"].shape == (4, 80)
  np.testing.assert_array_equal(batch["mask"], [1, 1, 0, 0])
  np.testing.assert_array_equal(batch["label"][:2], _expected("validation"))  # in image-id order
  assert batch["label"][2:].sum() == 0
  train_batch = next(data.train_batches(coco_cfg, global_batch_size=4, seed=0))
  assert train_batch["label"].dtype == np.int32 and train_batch["label"].shape == (4, 80)
  got = sorted(map(tuple, train_batch["label"].tolist()))  # one epoch: every train image once
  assert got == sorted(map(tuple, np.asarray(_expected("train")).tolist()))


@pytest.mark.parametrize("skip", [(coco.TRAIN_ZIP,), coco.ARCHIVES])
def test_missing_zips_one_line_error_naming_them(tmp_path, skip):
  write_fake_coco(tmp_path / "manual", skip=skip)
  cfg = data.default_data_config("coco_multilabel")
  cfg.data_dir, cfg.manual_dir = str(tmp_path / "data"), str(tmp_path / "manual")
  with pytest.raises(FileNotFoundError) as err:
    data.dataset_info(cfg)
  msg = str(err.value)
  assert "\n" not in msg and f"missing in {tmp_path / 'manual'}: {', '.join(skip)}." in msg
  assert "annotations_trainval2014.zip" in msg and "http://images.cocodataset.org/zips/train2014.zip" in msg


def test_corrupt_zip_one_line_error(tmp_path):
  write_fake_coco(tmp_path / "manual")
  (tmp_path / "manual" / coco.ANNOTATIONS_ZIP).write_bytes(b"not a zip")
  cfg = data.default_data_config("coco_multilabel")
  cfg.data_dir, cfg.manual_dir = str(tmp_path / "data"), str(tmp_path / "manual")
  with pytest.raises(ValueError) as err:
    data.dataset_info(cfg)
  msg = str(err.value)
  assert "\n" not in msg and "annotations_trainval2014.zip is not a readable zip archive" in msg


# --------------------------------------------------------------------------------------------- the config

def test_coco_config_trains_and_evaluates_on_fake_zips(coco_cfg, tmp_path):
  c = coco_config.get_config()
  c.data.update({k: coco_cfg[k] for k in ("data_dir", "manual_dir", "image_size", "eval_resize",
                                          "num_workers", "prefetch")})
  c.model = tiny_config().model  # the pipeline, loss and metrics are the subject here, not the paper's widths
  c = override(c, {"model.dtype": "float32", "train.batch_size": 4, "train.num_train_steps": 2,
                   "train.warmup_steps": 0, "train.num_glimpses": 2, "train.log_every": 1,
                   "eval.num_glimpses": 3, "eval.batch_size": 4, "eval.num_figure_images": 2})
  results = run.main(c, str(tmp_path / "work"), "train")
  per_step = results["multilabel_per_step"]
  assert set(per_step) == {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"} and results["num_examples"] == 2
  assert all(len(v) == 3 and all(0.0 <= x <= 1.0 for x in v) for v in per_step.values())
  assert "accuracy_per_step" not in results and results["threshold"] == 0.5
  assert results["adversarial_training"] is False
  with open(tmp_path / "work" / "eval" / "results.json") as f:
    assert json.load(f)["multilabel_per_step"] == per_step
  with open(tmp_path / "work" / "metrics.jsonl") as f:
    assert "f1_per_step" in json.loads(f.readlines()[-1])
  with pytest.raises(ValueError, match="single-label"):
    run.main(c, str(tmp_path / "work"), "attack")


def test_multi_label_refuses_adversarial_training_and_attack_validation():
  c = coco_config.get_config()
  with pytest.raises(ValueError, match="single-label"):
    attack_profiles.validate_attack_config(c)
  c.train.adversarial.enabled, c.train.adversarial.eps = True, 0.01
  with pytest.raises(ValueError, match="single-label"):
    from rsrnn_jax import configlib
    configlib.validate(c)


def test_mock_data_for_coco(tmp_path):
  import tensorflow_datasets as tfds
  cfg = data.default_data_config("coco_multilabel")
  cfg.data_dir = str(tmp_path)
  cfg.image_size, cfg.num_workers, cfg.prefetch = 24, 0, 0
  with tfds.testing.mock_data(num_examples=6):
    info = data.dataset_info(cfg)
    assert info.multi_label and info.num_train == 6 and info.num_classes == 80
    b = next(data.train_batches(cfg, global_batch_size=4, seed=0))
    assert b["image"].shape == (4, 24, 24, 3) and b["label"].shape == (4, 80)
    assert set(np.unique(b["label"])) <= {0, 1}
    masks = [e["mask"] for e in data.eval_batches(cfg, global_batch_size=4)]
    assert np.concatenate(masks).sum() == 6
