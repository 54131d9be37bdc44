"""The host decoders (``config.data.decoder``), the uint8 hand-over and the GPU decoder's selection and fallback."""
import io
import logging
import sys
import types

import cv2
import jax
import numpy as np
import pytest
from PIL import Image

from rsrnn_jax import data
from rsrnn_jax.data import dali, decoders, transforms
from tests.test_data import imagenet_cfg  # noqa: F401  (the fake ILSVRC2012 data set, a fixture)


def _gradient_jpeg(h: int, w: int) -> bytes:
  """A smooth image whose red channel encodes x and green channel y: a crop's pixels tell its box and flip."""
  y, x = np.mgrid[0:h, 0:w]
  img = np.stack([x * 255.0 / (w - 1), y * 255.0 / (h - 1), np.full((h, w), 128.0)], -1).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


SIZES = [(375, 500), (500, 333), (120, 90), (1200, 1600), (60, 400)]  # incl. the aspect-ratio fallback


def test_turbo_decode_is_libjpeg_turbo_bit_exact_and_falls_back_for_non_jpeg():
  blob = _gradient_jpeg(75, 100)
  np.testing.assert_array_equal(decoders.decode_rgb(blob), np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
  assert decoders.jpeg_size(blob) == (75, 100)
  png, cmyk = io.BytesIO(), io.BytesIO()
  Image.fromarray(np.full((9, 7, 3), 200, np.uint8)).save(png, format="PNG")
  Image.fromarray(np.full((9, 7, 3), 200, np.uint8)).convert("CMYK").save(cmyk, format="JPEG")
  for blob in (png.getvalue(), cmyk.getvalue()):
    out = decoders.decode_rgb(blob)
    assert out.shape == (9, 7, 3) and out.dtype == np.uint8
  assert decoders.decode_rgb(np.zeros((5, 6, 1), np.uint8)).shape == (5, 6, 3)  # mock_data's arrays


def test_turbo_crops_match_the_pil_transform_box_for_box():
  """Same generator -> the same RandomResizedCrop box and flip as the PIL (torchvision) transform: on gradient
  images the two outputs differ only by the resize filter."""
  size, diffs, flips = 32, [], []
  for h, w in SIZES:
    blob = _gradient_jpeg(h, w)
    for seed in range(12):
      ref = transforms.to_array(transforms.random_resized_crop(transforms.decode_pil(blob, 3), size,
                                                               np.random.default_rng([seed, h])), 3)
      out = np.ascontiguousarray(decoders.random_resized_crop(decoders.decode_rgb(blob), size,
                                                              np.random.default_rng([seed, h])))
      assert out.shape == ref.shape == (size, size, 3) and out.dtype == np.uint8
      diffs.append(np.abs(out.astype(int) - ref).mean())
      (_, _, _, _), flipped = decoders.crop_and_flip(np.random.default_rng([seed, h]), h, w)
      flips.append(flipped)
      if flipped:  # red falls from left to right
        assert out[:, 0, 0].mean() >= out[:, -1, 0].mean()
  assert max(diffs) < 3.0, max(diffs)  # grey levels of 255; a wrong box or flip costs tens
  assert 0.3 < np.mean(flips) < 0.7


def test_crop_box_statistics_are_torchvisions():
  """The boxes both decoders use (RandomResizedCrop's rules): area share in [0.08, 1], aspect in [3/4, 4/3],
  horizontal positions uniform, flips half the time; a sample of 3,000 boxes of a 500×375 image."""
  rng = np.random.default_rng(0)
  scale, aspect, x_pos, flips = [], [], [], []
  for _ in range(3000):
    (top, left, h, w), flip = decoders.crop_and_flip(rng, 375, 500)
    scale.append(h * w / (375 * 500))
    aspect.append(w / h)
    x_pos.append(left / max(500 - w, 1))
    flips.append(flip)
  assert 0.075 < min(scale) and max(scale) <= 1.0 and np.histogram(scale, bins=4, range=(0, 1))[0].min() > 200
  assert 0.74 < min(aspect) and max(aspect) < 1.35 and np.histogram(np.log(aspect), bins=4)[0].min() > 400
  assert np.histogram(x_pos, bins=4, range=(0, 1))[0].min() > 500 and abs(np.mean(flips) - 0.5) < 0.03


def test_turbo_eval_matches_pil_resize_center_crop():
  for h, w in SIZES[:4]:
    blob = _gradient_jpeg(h, w)
    ref = transforms.to_array(transforms.resize_center_crop(transforms.decode_pil(blob, 3), 40, 32), 3)
    out = decoders.resize_center_crop(decoders.decode_rgb(blob), 40, 32)
    assert out.shape == (32, 32, 3) and np.abs(out.astype(int) - ref).mean() < 2.0
  with pytest.raises(ValueError, match="centre crop"):
    decoders.resize_center_crop(decoders.decode_rgb(_gradient_jpeg(20, 20)), 10, 16)


def test_uint8_hand_over_gives_the_float_pipelines_batches(imagenet_cfg):
  """image_dtype='uint8' (default) converted on the device == the workers' float32 batches, bit for bit."""
  cfg = imagenet_cfg.copy_and_resolve_references()
  as_uint8 = next(data.train_batches(cfg, global_batch_size=6, seed=0, start_step=2))
  cfg.image_dtype = "float32"
  as_float = next(data.train_batches(cfg, global_batch_size=6, seed=0, start_step=2))
  assert as_uint8["image"].dtype == np.uint8 and as_float["image"].dtype == np.float32
  np.testing.assert_array_equal(np.asarray(jax.jit(data.unit_float)(as_uint8["image"])), as_float["image"])
  np.testing.assert_array_equal(as_uint8["label"], as_float["label"])
  cfg.image_dtype = "float16"
  with pytest.raises(ValueError, match="config.data.image_dtype"):
    next(data.train_batches(cfg, global_batch_size=6, seed=0))


def test_decoder_option_pil_and_unknown(imagenet_cfg):
  cfg = imagenet_cfg.copy_and_resolve_references()
  turbo = next(data.train_batches(cfg, global_batch_size=6, seed=0))["image"]
  cfg.decoder = "pil"
  pil = next(data.train_batches(cfg, global_batch_size=6, seed=0))["image"]
  assert pil.shape == turbo.shape and pil.dtype == turbo.dtype == np.uint8 and not np.array_equal(pil, turbo)
  cfg.decoder = "nvjpeg"
  with pytest.raises(ValueError, match="config.data.decoder='nvjpeg'; choose one of turbo, pil, dali"):
    next(data.train_batches(cfg, global_batch_size=6, seed=0))


def test_dali_falls_back_to_turbo_with_one_line(imagenet_cfg, monkeypatch, caplog):
  monkeypatch.setitem(sys.modules, "nvidia", None)  # "not installed", even where it is
  monkeypatch.setitem(sys.modules, "nvidia.dali", None)
  cfg = imagenet_cfg.copy_and_resolve_references()
  want = next(data.train_batches(cfg, global_batch_size=6, seed=0))
  cfg.decoder = "dali"
  with caplog.at_level(logging.WARNING, logger=dali.__name__):
    got = next(data.train_batches(cfg, global_batch_size=6, seed=0))
  lines = [r.getMessage() for r in caplog.records if r.name == dali.__name__]
  assert len(lines) == 1 and "falls back to 'turbo'" in lines[0] and "pip install nvidia-dali" in lines[0]
  assert "\n" not in lines[0]
  np.testing.assert_array_equal(got["image"], want["image"])


def test_dali_installed_but_no_gpu_falls_back(monkeypatch):
  fake = types.ModuleType("nvidia.dali")
  monkeypatch.setitem(sys.modules, "nvidia", types.ModuleType("nvidia"))
  monkeypatch.setitem(sys.modules, "nvidia.dali", fake)
  assert "no GPU" in dali.unavailable_reason()
  assert dali.resolve("dali") == "turbo" and dali.resolve("pil") == "pil"


def test_dali_workers_hand_over_bytes_boxes_and_flips():
  """What the workers send the GPU decoder: the records' bytes and the host decoders' draws."""
  blobs = [_gradient_jpeg(h, w) for h, w in SIZES]
  batch = dali.encoded_batch(blobs, [np.random.default_rng([1, i]) for i in range(len(blobs))])
  off = batch["jpeg_offsets"]
  assert [batch["jpeg"][off[i]:off[i + 1]].tobytes() for i in range(len(blobs))] == blobs
  for i, (h, w) in enumerate(SIZES):
    box, flip = decoders.crop_and_flip(np.random.default_rng([1, i]), h, w)
    assert tuple(batch["crop"][i]) == box and batch["flip"][i] == flip


def _textured_jpeg(rng: np.random.Generator, h: int, w: int) -> bytes:
  """Smooth noise at three scales (like bench/synthetic_imagenet.py's photos): detail for the resize filters."""
  out = np.full((h, w, 3), 128.0, np.float32)
  for amplitude, factor in ((60.0, 16), (30.0, 4), (10.0, 1)):
    small = amplitude * rng.standard_normal((max(h // factor, 1), max(w // factor, 1), 3)).astype(np.float32)
    out += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) if factor > 1 else small
  buf = io.BytesIO()
  Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def test_fast_downscale_draws_the_same_boxes_and_flips_as_pil():
  """downscale='fast' (DCT-scaled decode where the box spans twice the output, bilinear up to √2): the same
  draws as the PIL transform (the box from the header), on gradient images only the filter differs."""
  size, diffs, factors = 32, [], set()
  for h, w in SIZES:
    blob = _gradient_jpeg(h, w)
    for seed in range(12):
      r_pil, r_fast = np.random.default_rng([seed, h]), np.random.default_rng([seed, h])
      ref = transforms.to_array(transforms.random_resized_crop(transforms.decode_pil(blob, 3), size, r_pil), 3)
      out = np.ascontiguousarray(decoders.train_crop(blob, size, r_fast))
      assert r_pil.random() == r_fast.random() and out.shape == (size, size, 3) and out.dtype == np.uint8
      diffs.append(np.abs(out.astype(int) - ref).mean())
      (_, _, bh, bw), _ = decoders.crop_and_flip(np.random.default_rng([seed, h]), h, w)
      factors.add(decoders.dct_factor(bh, bw, size))
  assert max(diffs) < 3.0, max(diffs)
  assert factors == {1, 2, 4, 8}  # every DCT scale ran


def test_fast_downscale_keeps_the_crops_statistics():
  """Textured JPEGs of ImageNet's proportions (output/image as 336 / 500×375, a few 3× larger): per crop, the
  mean, the contrast and the fine detail (Laplacian energy) of 'fast' and 'area' against PIL's antialiased
  bilinear (torchvision's), 120 crops. Measured: detail 1.085 (fast), 1.055 (area); OpenCV's bilinear on every
  crop (no antialiasing) would give 1.153, a 1-grey-level brightening a mean shift of 0.89."""
  rng, size = np.random.default_rng(0), 96
  stats = {"fast": [], "area": []}
  for i in range(40):
    h, w = ((108, 144), (144, 108), (324, 432))[i % 3]
    blob = _textured_jpeg(rng, h, w)
    for seed in range(3):
      ref = transforms.to_array(transforms.random_resized_crop(
          transforms.decode_pil(blob, 3), size, np.random.default_rng([seed, i])), 3).astype(np.float32)
      for name in stats:
        out = decoders.train_crop(blob, size, np.random.default_rng([seed, i]), downscale=name).astype(np.float32)
        detail = np.std(cv2.Laplacian(out, cv2.CV_32F)) / np.std(cv2.Laplacian(ref, cv2.CV_32F))
        stats[name].append((out.mean() - ref.mean(), out.std() / ref.std(), detail, np.abs(out - ref).mean()))
  for name, rows in stats.items():
    mean_shift, contrast, detail, mad = np.mean(rows, axis=0)
    assert abs(mean_shift) < 0.3 and abs(contrast - 1) < 0.02, (name, mean_shift, contrast)
    assert 0.95 < detail < 1.12 and mad < 2.0, (name, detail, mad)
    assert np.max(np.abs(np.array(rows)[:, 0])) < 1.5, name  # no crop's mean off by more than 1.5 grey levels


def test_train_crop_writes_into_the_batch_slot():
  png = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(png, format="PNG")
  for blob in (_gradient_jpeg(375, 500), _gradient_jpeg(1200, 1600), png.getvalue()):
    for seed in range(6):
      for downscale in decoders.DOWNSCALES:
        want = decoders.train_crop(blob, 32, np.random.default_rng(seed), downscale=downscale)
        batch = np.zeros((3, 32, 32, 3), np.uint8)
        got = decoders.train_crop(blob, 32, np.random.default_rng(seed), downscale=downscale, out=batch[1])
        assert np.shares_memory(got, batch) and not batch[0].any() and not batch[2].any()
        np.testing.assert_array_equal(batch[1], want)


def test_dct_factor_and_downscale_option(imagenet_cfg):
  assert decoders.dct_factor(671, 1000, 336) == 1 and decoders.dct_factor(672, 700, 336) == 2
  assert decoders.dct_factor(1400, 2000, 336) == 4 and decoders.dct_factor(6000, 6000, 336) == 8
  for factor in (2, 4, 8):  # libjpeg's scaled size, which train_crop's box mapping assumes
    blob = _gradient_jpeg(375, 500)
    img = decoders.simplejpeg.decode_jpeg(blob, colorspace="RGB", min_height=-(-375 // factor),
                                          min_width=-(-500 // factor))
    assert img.shape == (-(-375 // factor), -(-500 // factor), 3)
  cfg = imagenet_cfg.copy_and_resolve_references()
  fast = next(data.train_batches(cfg, global_batch_size=6, seed=0))["image"]
  cfg.downscale = "area"
  assert fast.shape == next(data.train_batches(cfg, global_batch_size=6, seed=0))["image"].shape
  cfg.downscale = "bicubic"
  with pytest.raises(ValueError, match="config.data.downscale='bicubic'; choose one of fast, area"):
    next(data.train_batches(cfg, global_batch_size=6, seed=0))
