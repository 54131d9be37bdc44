"""The host decoders (``config.data.decoder``), the uint8 hand-over and the GPU decoder's selection and fallback."""
import io
import logging
import sys
import types

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
