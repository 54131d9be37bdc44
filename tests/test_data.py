"""Tests of rsrnn_jax.data: idx parsing, the two TFDS builders, the grain pipeline.

Everything runs on small synthetic data written into tmp dirs (a few hundred Fashion-MNIST-like items, fake
ILSVRC2012 tars); one test reads the real Fashion-MNIST files and is skipped when they are not installed.
"""
from __future__ import annotations

import hashlib
import io
import logging
import subprocess
import tarfile
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from PIL import Image

from rsrnn_jax import data
from rsrnn_jax.data import cluttered, fashion_mnist, imagenet100, pipeline, transforms

N_TRAIN, N_TEST = 300, 100


def _fake_items(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """n distinct 28x28 items, every pixel >= 40 (so each is all ink), labels 0..9."""
  rng = np.random.default_rng(seed)
  return rng.integers(40, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
  folder = tmp_path_factory.mktemp("fmnist")
  fashion_mnist.write_idx(folder, "train", *_fake_items(N_TRAIN, 0))
  fashion_mnist.write_idx(folder, "test", *_fake_items(N_TEST, 1), compress=False)  # un-gzipped names too
  return folder


def _cfg(fmnist_dir, data_dir, **overrides):
  cfg = data.default_data_config("cluttered_fashion_mnist")
  cfg.data_dir = str(data_dir)
  cfg.source_dir = str(fmnist_dir)
  cfg.canvas_size, cfg.num_clutter, cfg.clutter_size = 48, 4, 9
  cfg.prefetch = 0
  cfg.update(overrides)
  return cfg


@pytest.fixture(scope="module")
def clutter_data_dir(fmnist_dir, tmp_path_factory):
  d = tmp_path_factory.mktemp("tfds")
  data.prepare(_cfg(fmnist_dir, d))
  return d


def _digest(a: np.ndarray) -> str:
  return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------
# Fashion-MNIST files.


def test_idx_round_trip_and_header_checks(fmnist_dir, tmp_path):
  images, labels = fashion_mnist.load_fashion_mnist(fmnist_dir, "train")
  want_images, want_labels = _fake_items(N_TRAIN, 0)
  assert images.dtype == np.uint8 and images.shape == (N_TRAIN, 28, 28)
  assert labels.dtype == np.int64 and labels.shape == (N_TRAIN,)
  np.testing.assert_array_equal(images, want_images)
  np.testing.assert_array_equal(labels, want_labels)
  assert fashion_mnist.load_fashion_mnist(fmnist_dir, "test")[0].shape == (N_TEST, 28, 28)  # plain files

  blob = (fmnist_dir / "t10k-images-idx3-ubyte").read_bytes()
  with pytest.raises(ValueError, match="magic"):
    fashion_mnist.parse_idx_labels(blob)
  with pytest.raises(ValueError, match="header"):
    fashion_mnist.parse_idx_images(blob[:-5])
  with pytest.raises(ValueError, match="'train' or 'test'"):
    fashion_mnist.load_fashion_mnist(fmnist_dir, "validation")


def test_find_fashion_mnist(fmnist_dir, tmp_path):
  assert fashion_mnist.find_fashion_mnist(fmnist_dir) == fmnist_dir
  with pytest.raises(FileNotFoundError, match="config.data.source_dir"):
    fashion_mnist.find_fashion_mnist(tmp_path)  # explicit folder: never installs anything


def test_missing_data_message_when_not_root(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist, "DEFAULT_SOURCE_DIR", str(tmp_path / "nothing"))
  monkeypatch.setattr(fashion_mnist.os, "geteuid", lambda: 1000)
  monkeypatch.setattr(fashion_mnist.subprocess, "run", lambda *a, **k: pytest.fail("must not run apt"))
  with pytest.raises(FileNotFoundError) as err:
    fashion_mnist.find_fashion_mnist()
  msg = str(err.value)
  assert "\n" not in msg
  assert "`sudo apt-get install -y dataset-fashion-mnist`" in msg
  assert "config.data.source_dir" in msg and "train-images-idx3-ubyte.gz" in msg


def test_root_installs_the_debian_package(tmp_path, monkeypatch, fmnist_dir):
  target = tmp_path / "fm"
  monkeypatch.setattr(fashion_mnist, "DEFAULT_SOURCE_DIR", str(target))
  monkeypatch.setattr(fashion_mnist.os, "geteuid", lambda: 0)
  monkeypatch.setattr(fashion_mnist.shutil, "which", lambda name: "/usr/bin/" + name)
  calls = []

  def fake_run(cmd, **kwargs):
    calls.append(cmd[:2])
    if cmd[1] == "install" and ["apt-get", "update"] in calls:  # works once the lists are fresh
      for f in fmnist_dir.iterdir():
        target.mkdir(exist_ok=True)
        (target / f.name).write_bytes(f.read_bytes())
      return subprocess.CompletedProcess(cmd, 0)
    return subprocess.CompletedProcess(cmd, 100 if cmd[1] == "install" else 0)

  monkeypatch.setattr(fashion_mnist.subprocess, "run", fake_run)
  assert fashion_mnist.find_fashion_mnist() == target
  assert calls == [["apt-get", "install"], ["apt-get", "update"], ["apt-get", "install"]]


def test_real_fashion_mnist_files():
  try:
    folder = fashion_mnist.find_fashion_mnist(fashion_mnist.DEFAULT_SOURCE_DIR)
  except FileNotFoundError:
    pytest.skip("dataset-fashion-mnist is not installed")
  for split, n in (("train", 60_000), ("test", 10_000)):
    images, labels = fashion_mnist.load_fashion_mnist(folder, split)
    assert images.shape == (n, 28, 28) and labels.shape == (n,)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), np.full(10, n // 10))


# --------------------------------------------------------------------------------------------------------
# Cluttered generation.


def test_generation_is_deterministic_and_places_the_item():
  items, _ = _fake_items(200, 3)
  kw = dict(canvas_size=60, num_clutter=6, clutter_size=8, split="train")
  canvas, pos = cluttered.generate(items, seed=0, **kw)
  canvas2, pos2 = cluttered.generate(items, seed=0, **kw)
  np.testing.assert_array_equal(canvas, canvas2)
  np.testing.assert_array_equal(pos, pos2)
  assert not np.array_equal(canvas, cluttered.generate(items, seed=1, **kw)[0])
  assert not np.array_equal(canvas, cluttered.generate(items, seed=0, **{**kw, "split": "test"})[0])

  assert canvas.shape == (200, 60, 60) and pos.dtype == np.int32
  assert pos.min() >= 0 and pos.max() <= 60 - 28  # fully inside the canvas
  outside = np.ones((200, 60, 60), bool)
  for i, (r, c) in enumerate(pos):
    window = canvas[i, r:r + 28, c:c + 28]
    assert np.all(window >= items[i])  # max-combined: clutter never erases the item
    outside[i, r:r + 28, c:c + 28] = False
  clutter_pixels = (canvas * outside).astype(bool).sum((1, 2))
  assert np.all(clutter_pixels > 0)  # every example has visible clutter outside the item
  assert clutter_pixels.mean() < 6 * 64  # ... made of at most 6 fragments of 8x8

  bare, _ = cluttered.generate(items, seed=0, **{**kw, "num_clutter": 0})
  assert np.all(bare * outside == 0)


def test_items_drawn_larger_keep_their_place_and_the_generation_its_determinism():
  """``item_size``: items resized before pasting (fragments cut from the resized items), positions inside the
  canvas for the larger item, the same bytes from the same seed."""
  items, _ = _fake_items(60, 3)
  kw = dict(canvas_size=80, num_clutter=3, clutter_size=12, split="test", item_size=40)
  canvas, pos = cluttered.generate(items, seed=0, **kw)
  np.testing.assert_array_equal(canvas, cluttered.generate(items, seed=0, **kw)[0])
  assert canvas.shape == (60, 80, 80) and pos.min() >= 0 and pos.max() <= 80 - 40
  big = cluttered.scale_items(items, 40)
  assert big.shape == (60, 40, 40) and big.dtype == np.uint8
  assert cluttered.scale_items(items, 28) is items
  for i, (r, c) in enumerate(pos):
    assert np.all(canvas[i, r:r + 40, c:c + 40] >= big[i])  # the enlarged item, never erased by clutter
  with pytest.raises(ValueError, match="clutter_size"):
    cluttered.config_for(80, 3, 41, item_size=40)
  with pytest.raises(ValueError, match="canvas_size"):
    cluttered.config_for(30, 3, 8, item_size=40)


def test_paper_geometry_setting_has_the_papers_proportions():
  """configs/demo.py:setting=paper_geometry: image : glimpse = 336 : 64, crops 0.25 / 0.5 of the side, the item
  at ImageNet's mean object scale (0.358 of the image area), whole-image models at the paper's 224 : 336."""
  from rsrnn_jax import configlib
  cfgs = {m: configlib.load_file("configs/demo.py", f"setting=paper_geometry,model={m}")
          for m in ("rsrnn", "dram", "gfnet_m", "ff_cnn", "s3ta")}
  d = cfgs["rsrnn"].data
  assert d.canvas_size / cfgs["rsrnn"].model.sampler.out_size == 336 / 64
  assert tuple(cfgs["dram"].model.sampler.scales) == (0.25, 0.5) and tuple(cfgs["gfnet_m"].model.sampler.scales) == (0.25,)
  assert abs(d.item_size ** 2 / d.canvas_size ** 2 - 0.358) < 0.01
  assert cfgs["ff_cnn"].model.input_size / d.canvas_size == cfgs["s3ta"].model.input_size / d.canvas_size == 224 / 336
  assert "input_size" not in cfgs["rsrnn"].model
  name = cluttered.config_for(d.canvas_size, d.num_clutter, d.clutter_size, item_size=d.item_size).name
  assert name == cluttered.PAPER_GEOMETRY_CONFIG.name == "c168_n8_f32_i100"
  assert cluttered.ClutteredFashionMnist.get_builder_config(name) is cluttered.PAPER_GEOMETRY_CONFIG
  assert cluttered.ClutteredFashionMnist.get_builder_config("c168_n8_f32_i100_s3").seed == 3
  demo = configlib.load_file("configs/demo.py", "model=rsrnn")
  assert demo.data.canvas_size == 96 and "item_size" not in demo.data  # the demo's config is unchanged
  with pytest.raises(ValueError, match="unknown setting"):
    configlib.load_file("configs/demo.py", "setting=nonesuch")


def test_clutter_comes_from_other_items_with_ink():
  items = np.zeros((1000, 28, 28), np.uint8)
  items[:, 10:20, 10:20] = 200  # ink only in the middle: uniform 9x9 crops hit >= 10% ink only ~60% of the time
  plan = cluttered.make_plan(items, canvas_size=64, num_clutter=5, clutter_size=9, seed=0, split="train")
  assert np.all(plan.clutter_source != np.arange(1000)[:, None])
  overlap = lambda a: np.clip(np.minimum(a + 9, 20) - np.maximum(a, 10), 0, None)  # noqa: E731
  ink = overlap(plan.clutter_crop[..., 0]) * overlap(plan.clutter_crop[..., 1]) / 81
  assert (ink >= 0.1).mean() > 0.95


def test_png_encoder_and_fast_decoder():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (33, 17), dtype=np.uint8)
  png = cluttered.encode_png_gray(a)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), a)
  np.testing.assert_array_equal(transforms.decode(png, 1)[..., 0], a)
  buf = io.BytesIO()  # PIL's PNGs use row filters: decode must fall back to PIL and still be exact
  Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(buf, format="PNG")
  rgb = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
  np.testing.assert_array_equal(transforms.decode(buf.getvalue(), 3), rgb)


def test_config_names():
  assert cluttered.config_for(96, 8, 9) is cluttered.DEFAULT_CONFIG
  assert cluttered.DEFAULT_CONFIG.name == "c96_n8_f9"
  cfg = cluttered.ClutteredFashionMnist.get_builder_config("c50_n3_f7_s2")
  assert (cfg.canvas_size, cfg.num_clutter, cfg.clutter_size, cfg.seed) == (50, 3, 7, 2)
  assert cfg is cluttered.config_for(50, 3, 7, seed=2)
  assert cluttered.ClutteredFashionMnist.get_builder_config("bogus") is None
  with pytest.raises(ValueError):
    cluttered.config_for(20, 1, 5)


# --------------------------------------------------------------------------------------------------------
# Cluttered TFDS builder.


def test_builder_splits_features_and_positions(fmnist_dir, clutter_data_dir):
  name = "cluttered_fashion_mnist/c48_n4_f9"
  train = tfds.data_source(name, split="train", data_dir=clutter_data_dir)
  test = tfds.data_source(name, split="test", data_dir=clutter_data_dir)
  assert (len(train), len(test)) == (N_TRAIN, N_TEST)
  builder = tfds.builder(name, data_dir=clutter_data_dir)
  assert builder.info.supervised_keys == ("image", "label")
  assert builder.info.features["label"].names == list(fashion_mnist.CLASS_NAMES)

  items, labels = fashion_mnist.load_fashion_mnist(fmnist_dir, "test")
  canvas, pos = cluttered.generate(items, canvas_size=48, num_clutter=4, clutter_size=9, seed=0, split="test")
  for i in (0, 1, N_TEST - 1):
    ex = test[i]
    assert ex["image"].shape == (48, 48, 1) and ex["image"].dtype == np.uint8
    assert int(ex["label"]) == labels[i]  # stored in item order
    np.testing.assert_array_equal(ex["position"], pos[i])
    np.testing.assert_array_equal(ex["image"][..., 0], canvas[i])
    r, c = ex["position"]
    assert np.all(ex["image"][r:r + 28, c:c + 28, 0] >= items[i])


def test_builder_is_byte_deterministic(fmnist_dir, clutter_data_dir, tmp_path):
  config = cluttered.config_for(48, 4, 9)
  again = cluttered.ClutteredFashionMnist(config=config, data_dir=tmp_path, source_dir=fmnist_dir)
  again.download_and_prepare()
  first = cluttered.ClutteredFashionMnist(config=config, data_dir=clutter_data_dir)
  raw = tfds.decode.DeserializeMethod.RAW_BYTES
  for split in ("train", "test"):
    a = first.as_data_source(split, deserialize_method=raw)
    b = again.as_data_source(split, deserialize_method=raw)
    assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]


def test_concurrent_prepare_generates_once(fmnist_dir, tmp_path, caplog):
  cfg = _cfg(fmnist_dir, tmp_path, canvas_size=40, num_clutter=2)
  errors = []

  def run():
    try:
      data.prepare(cfg)
    except Exception as e:  # noqa: BLE001
      errors.append(e)

  with caplog.at_level(logging.INFO, logger="rsrnn_jax.data.sources"):
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
  assert not errors
  assert sum("Preparing TFDS dataset" in r.message for r in caplog.records) == 1
  assert len(tfds.data_source("cluttered_fashion_mnist/c40_n2_f9", split="test", data_dir=tmp_path)) == N_TEST


# --------------------------------------------------------------------------------------------------------
# Pipeline on the cluttered data.


def test_default_config_has_every_field():
  for name in data.registry.names():
    cfg = data.default_data_config(name)
    for field in ("name", "data_dir", "source_dir", "canvas_size", "num_clutter", "clutter_size", "image_size",
                  "eval_resize", "cache_in_memory", "num_workers", "train_split", "eval_split"):
      assert field in cfg, field
  assert data.default_data_config("cluttered_fashion_mnist").cache_in_memory
  with pytest.raises(ValueError):
    data.default_data_config("cifar10")


def test_dataset_info(fmnist_dir, clutter_data_dir):
  info = data.dataset_info(_cfg(fmnist_dir, clutter_data_dir))
  assert info == data.DatasetInfo(name="cluttered_fashion_mnist", num_classes=10, image_shape=(48, 48, 1),
                                  num_train=N_TRAIN, num_eval=N_TEST, class_names=fashion_mnist.CLASS_NAMES)


@pytest.mark.parametrize("cache", [True, False])
def test_train_batches_shapes_and_resume(fmnist_dir, clutter_data_dir, cache):
  cfg = _cfg(fmnist_dir, clutter_data_dir, cache_in_memory=cache, prefetch=2)
  it = data.train_batches(cfg, global_batch_size=64, seed=3)
  batches = [next(it) for _ in range(7)]  # > 1 epoch of 300
  b = batches[0]
  assert set(b) == {"image", "label"}
  assert b["image"].shape == (64, 48, 48, 1) and b["image"].dtype == np.uint8  # the train step makes [0, 1]
  assert b["label"].shape == (64,) and b["label"].dtype == np.int32
  assert b["image"].max() > 128

  # Resume: batch k of a fresh iterator started at k equals batch k of the run from 0.
  for k in (1, 5):
    resumed = next(data.train_batches(cfg, global_batch_size=64, seed=3, start_step=k))
    np.testing.assert_array_equal(resumed["image"], batches[k]["image"])
    np.testing.assert_array_equal(resumed["label"], batches[k]["label"])

  # One epoch = a permutation of the split: the first 4 batches (256 < 300) hold distinct examples.
  first = np.concatenate([x["image"] for x in batches[:4]])
  assert len({_digest(x) for x in first}) == 256
  other_seed = next(data.train_batches(cfg, global_batch_size=64, seed=4))
  assert not np.array_equal(other_seed["image"], b["image"])


def test_every_epoch_is_a_fresh_permutation(fmnist_dir, clutter_data_dir):
  it = data.train_batches(_cfg(fmnist_dir, clutter_data_dir), global_batch_size=60, seed=0)
  epochs = [np.concatenate([next(it)["image"] for _ in range(5)]) for _ in range(2)]  # 5 x 60 = 300 = N
  digests = [[_digest(x) for x in e] for e in epochs]
  assert len(set(digests[0])) == len(set(digests[1])) == N_TRAIN
  assert set(digests[0]) == set(digests[1]) and digests[0] != digests[1]


def test_cache_and_records_give_the_same_batches(fmnist_dir, clutter_data_dir):
  a = data.train_batches(_cfg(fmnist_dir, clutter_data_dir, cache_in_memory=True), global_batch_size=32, seed=0)
  b = data.train_batches(_cfg(fmnist_dir, clutter_data_dir, cache_in_memory=False), global_batch_size=32, seed=0)
  for _ in range(3):
    x, y = next(a), next(b)
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


def test_process_shards_are_disjoint_and_make_the_global_batch(fmnist_dir, clutter_data_dir):
  cfg = _cfg(fmnist_dir, clutter_data_dir)
  whole = data.train_batches(cfg, global_batch_size=60, seed=1, start_step=2)
  parts = [data.train_batches(cfg, global_batch_size=60, seed=1, start_step=2, process_index=p, process_count=3)
           for p in range(3)]
  for _ in range(2):
    g = next(whole)
    shards = [next(p) for p in parts]
    assert all(s["image"].shape[0] == 20 for s in shards)
    digests = [{_digest(x) for x in s["image"]} for s in shards]
    assert all(not (digests[i] & digests[j]) for i in range(3) for j in range(i + 1, 3))
    np.testing.assert_array_equal(np.concatenate([s["image"] for s in shards]), g["image"])
    np.testing.assert_array_equal(np.concatenate([s["label"] for s in shards]), g["label"])
  with pytest.raises(ValueError, match="divisible"):
    data.train_batches(cfg, global_batch_size=61, seed=1, process_count=2)


@pytest.mark.parametrize("worker_threads", [0, 1])  # 0: batches built in shared memory; 1: copied there by grain
def test_worker_processes_give_the_same_batches(fmnist_dir, clutter_data_dir, worker_threads):
  cfg = _cfg(fmnist_dir, clutter_data_dir, cache_in_memory=False)
  want = data.train_batches(cfg, global_batch_size=32, seed=2, start_step=4)
  flags_were_parsed = flags.FLAGS.is_parsed()  # grain's workers need parsed absl flags; the pipeline marks them
  with pytest.raises(ValueError, match="config.data.worker_threads=-1"):
    data.train_batches(_with(cfg, num_workers=1, worker_threads=-1), global_batch_size=32, seed=2)
  got = data.train_batches(_with(cfg, num_workers=1, prefetch=1, worker_threads=worker_threads),
                           global_batch_size=32, seed=2, start_step=4)
  try:
    for _ in range(3):
      np.testing.assert_array_equal(next(got)["image"], next(want)["image"])
  finally:
    got.close()
    if not flags_were_parsed:
      flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("max_examples", [None, 77])
def test_eval_covers_every_example_once_over_two_processes(fmnist_dir, clutter_data_dir, max_examples):
  cfg = _cfg(fmnist_dir, clutter_data_dir, cache_in_memory=False)
  n = max_examples or N_TEST
  per_process = [list(data.eval_batches(cfg, global_batch_size=24, process_index=p, process_count=2,
                                        max_examples=max_examples)) for p in range(2)]
  assert len(per_process[0]) == len(per_process[1]) == -(-n // 24)  # same count: collectives stay in step
  seen_images, seen_labels = [], []
  for batches in per_process:
    for b in batches:
      assert b["image"].shape == (12, 48, 48, 1) and b["mask"].dtype == np.float32
      real = b["mask"] == 1
      assert np.all(b["image"][~real] == 0) and set(np.unique(b["mask"])) <= {0.0, 1.0}
      seen_images.append(b["image"][real])
      seen_labels.append(b["label"][real])
  seen = np.concatenate(seen_images)
  assert len(seen) == n
  test = tfds.data_source("cluttered_fashion_mnist/c48_n4_f9", split="test", data_dir=clutter_data_dir)
  want = [_digest(test[i]["image"]) for i in range(n)]
  assert sorted(_digest(np.rint(x * 255).astype(np.uint8)) for x in seen) == sorted(want)
  assert sorted(np.concatenate(seen_labels)) == sorted(int(test[i]["label"]) for i in range(n))


def test_eval_split_override_and_split_slicing(fmnist_dir, clutter_data_dir):
  cfg = _cfg(fmnist_dir, clutter_data_dir, train_split="train[:200]", eval_split="train[200:]")
  info = data.dataset_info(cfg)
  assert (info.num_train, info.num_eval) == (200, 100)
  total = sum(b["mask"].sum() for b in data.eval_batches(cfg, global_batch_size=64, split="test"))
  assert total == N_TEST


# --------------------------------------------------------------------------------------------------------
# ImageNet100.

VAL_LABEL_LINES = {19: "n02971356", 24: "n03956157", 33: "n02077923"}  # lines of TFDS's real ground truth


def _jpeg(rng, h, w, mode="RGB", fmt="JPEG") -> bytes:
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode).save(buf, format=fmt)
  return buf.getvalue()


def _add(tar, name, blob):
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  tar.addfile(info, io.BytesIO(blob))


def _fake_ilsvrc(manual_dir, *, val_names) -> list[str]:
  """Train tar: 3 of the 100 classes + 1 other, 3 images each (one CMYK, one grey); val tar: val_names."""
  rng = np.random.default_rng(0)
  manual_dir.mkdir(parents=True, exist_ok=True)
  classes = ["n02971356", "n03956157", "n02077923", "n01440764"]  # the last is not in ImageNet100
  with tarfile.open(manual_dir / imagenet100.TRAIN_TAR, "w") as outer:
    for wnid in classes:
      inner_buf = io.BytesIO()
      with tarfile.open(fileobj=inner_buf, mode="w") as inner:
        for i, mode in enumerate(("RGB", "CMYK", "L")):
          _add(inner, f"{wnid}_{i}.JPEG", _jpeg(rng, 40 + 7 * i, 56, mode))
      _add(outer, f"{wnid}.tar", inner_buf.getvalue())
  with tarfile.open(manual_dir / imagenet100.VAL_TAR, "w") as tar:
    for i, name in enumerate(val_names):
      _add(tar, name, _jpeg(rng, 50, 38, "RGB", "PNG" if i == 0 else "JPEG"))  # one PNG in disguise
  return classes[:3]


def test_imagenet100_builder_from_fake_tars(tmp_path):
  # Injected labels file: val images 1..4, image 2 of a class outside the subset.
  labels_file = tmp_path / "val_labels.txt"
  labels_file.write_text("n02971356\nn01440764\nn03956157\nn02077923\n")
  _fake_ilsvrc(tmp_path / "manual", val_names=[f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 5)])
  builder = imagenet100.Imagenet100(data_dir=tmp_path / "data", validation_labels_path=labels_file)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=tmp_path / "manual"))

  names = builder.info.features["label"].names
  assert names == sorted(imagenet100.WNIDS_AS_STORED) and len(names) == 100
  train = builder.as_data_source("train")
  assert len(train) == 9  # 3 kept classes x 3; the other class is skipped
  for ex in (train[i] for i in range(9)):
    file_name = ex["file_name"].decode() if isinstance(ex["file_name"], bytes) else ex["file_name"]
    assert names[int(ex["label"])] == file_name.split("_")[0]
    assert ex["image"].ndim == 3 and ex["image"].shape[-1] == 3  # CMYK and grey converted to RGB
  val = builder.as_data_source("validation")
  got = {(ex["file_name"].decode() if isinstance(ex["file_name"], bytes) else ex["file_name"]): names[int(ex["label"])]
         for ex in (val[i] for i in range(len(val)))}
  assert got == {"ILSVRC2012_val_00000001.JPEG": "n02971356", "ILSVRC2012_val_00000003.JPEG": "n03956157",
                 "ILSVRC2012_val_00000004.JPEG": "n02077923"}


@pytest.fixture(scope="module")
def imagenet_cfg(tmp_path_factory):
  root = tmp_path_factory.mktemp("imagenet")
  _fake_ilsvrc(root / "manual", val_names=[f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, *VAL_LABEL_LINES)])
  cfg = data.default_data_config("imagenet100")
  cfg.data_dir, cfg.manual_dir = str(root / "data"), str(root / "manual")
  cfg.image_size, cfg.eval_resize = 32, 36
  cfg.num_workers, cfg.prefetch = 0, 0
  return cfg


def test_imagenet100_pipeline_uses_tfds_validation_ground_truth(imagenet_cfg):
  info = data.dataset_info(imagenet_cfg)
  assert (info.num_classes, info.image_shape, info.num_train, info.num_eval) == (100, (32, 32, 3), 9, 3)
  batches = list(data.eval_batches(imagenet_cfg, global_batch_size=4))
  assert len(batches) == 1 and batches[0]["image"].shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(batches[0]["mask"], [1, 1, 1, 0])
  got = sorted(info.class_names[i] for i in batches[0]["label"][:3])
  assert got == sorted(VAL_LABEL_LINES.values())  # val image 1 (n01751748) is not an ImageNet100 class


def test_imagenet100_augmentation_is_deterministic(imagenet_cfg):
  a = next(data.train_batches(imagenet_cfg, global_batch_size=6, seed=0, start_step=3))
  b = next(data.train_batches(imagenet_cfg, global_batch_size=6, seed=0, start_step=3))
  c = next(data.train_batches(imagenet_cfg, global_batch_size=6, seed=1, start_step=3))
  assert a["image"].shape == (6, 32, 32, 3) and a["image"].dtype == np.uint8
  np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(a["image"], c["image"])
  with pytest.raises(ValueError, match="cache_in_memory"):
    next(data.train_batches(_with(imagenet_cfg, cache_in_memory=True), global_batch_size=6, seed=0))


def _with(cfg, **kw):
  cfg = cfg.copy_and_resolve_references()
  cfg.update(kw)
  return cfg


def test_imagenet100_missing_tars_error(tmp_path):
  cfg = data.default_data_config("imagenet100")
  cfg.data_dir, cfg.manual_dir = str(tmp_path / "data"), str(tmp_path / "manual")
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / imagenet100.VAL_TAR).write_bytes(b"")
  with pytest.raises(FileNotFoundError) as err:
    data.dataset_info(cfg)
  msg = str(err.value)
  assert imagenet100.TRAIN_TAR in msg.splitlines()[0] and str(tmp_path / "manual") in msg
  assert "missing in" in msg and f"missing in {tmp_path / 'manual'}: {imagenet100.TRAIN_TAR}." in msg


def test_mock_data_for_imagenet100(tmp_path):
  cfg = data.default_data_config("imagenet100")
  cfg.data_dir = str(tmp_path)
  cfg.image_size, cfg.eval_resize, cfg.num_workers, cfg.prefetch = 24, 28, 0, 0
  with tfds.testing.mock_data(num_examples=10):
    ds = tfds.data_source("imagenet100", split="train")
    assert len(ds) == 10 and ds[0]["image"].shape[-1] == 3
    info = data.dataset_info(cfg)
    assert info.num_train == 10 and info.num_classes == 100
    b = next(data.train_batches(cfg, global_batch_size=4, seed=0))
    assert b["image"].shape == (4, 24, 24, 3) and b["label"].max() < 100
    masks = [e["mask"] for e in data.eval_batches(cfg, global_batch_size=4)]
    assert np.concatenate(masks).sum() == 10


# --------------------------------------------------------------------------------------------------------
# Transforms.


def test_random_resized_crop_matches_torchvision_rules():
  rng = np.random.default_rng(0)
  for _ in range(200):
    h, w = rng.integers(5, 300, 2)
    top, left, ch, cw = transforms.random_resized_crop_box(int(h), int(w), rng)
    assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch > 0 and cw > 0
  img = Image.fromarray(np.arange(60 * 80 * 3, dtype=np.uint32).reshape(60, 80, 3).astype(np.uint8))
  a = transforms.random_resized_crop(img, 16, np.random.default_rng(5))
  b = transforms.random_resized_crop(img, 16, np.random.default_rng(5))
  assert a.size == (16, 16) and np.array_equal(np.asarray(a), np.asarray(b))


def test_resize_center_crop():
  a = np.zeros((100, 200, 3), np.uint8)
  a[:, 95:105] = 255  # a vertical bar in the middle survives the centre crop
  out = np.asarray(transforms.resize_center_crop(Image.fromarray(a), 40, 32))
  assert out.shape == (32, 32, 3)
  assert out[:, 16].min() > 200 and out[:, 0].max() == 0
