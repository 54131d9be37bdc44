"""Input pipeline throughput: imagenet100's train and eval transforms on synthetic JPEGs of ImageNet's sizes.

  python bench/input_pipeline.py [--workers 0,1,2] [--images 400] [--batch 16] [--batches 16] [--quick]

Builds the real ``imagenet100`` TFDS data set (rsrnn_jax/data/imagenet100.py) from fake ILSVRC2012 tars of
synthetic JPEGs in a temporary folder, then measures:

* ``transforms``: decode + RandomResizedCrop(336) + flip (train) or Resize(384) + CenterCrop(336) (eval), one
  image at a time in this process, with and without reduced-size JPEG decoding (``draft``,
  rsrnn_jax/data/transforms.py): images per CPU-second = images per core;
* ``pipeline``: ``data.train_batches`` / ``data.eval_batches`` (grain, float32 batches, the configs/imagenet.py
  sizes) with 0, 1 and 2 worker processes: images/s of wall time and per CPU-second of this process and its
  workers (psutil), which adds batching, float conversion and the copies between processes.

Images per CPU-second hardly depend on what else runs on the machine (unlike images/s), which is why they are
the headline: cores needed = images/s wanted ÷ images per CPU-second.

Synthetic images: 85% have a 500-pixel long side (ImageNet's most common size: 500×375, 500×333, 375×500...),
10% a long side log-uniform in 600–1600, 5% in 150–450; aspect ratios 4:3, 3:2, 5:4, 1:1; a quarter portrait.
Content: smooth noise at three scales (about the bits per pixel of photos), JPEG quality 90. The JSON records
the mean file size and megapixels (ImageNet train: about 110 KB and 0.2 MP per image).
"""
from __future__ import annotations

import argparse
import gc
import io
import math
import os
import resource
import sys
import tarfile
import tempfile
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (puts the repository on sys.path)

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from PIL import Image  # noqa: E402

from rsrnn_jax import data  # noqa: E402
from rsrnn_jax.data import imagenet100, transforms  # noqa: E402

ASPECTS = ((4 / 3, 0.55), (3 / 2, 0.3), (5 / 4, 0.1), (1.0, 0.05))


def image_sizes(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
  """(height, width) of ``n`` images following the distribution in the module docstring."""
  ratios, weights = zip(*ASPECTS)
  sizes = []
  for _ in range(n):
    u = rng.random()
    if u < 0.85:
      long = 500
    elif u < 0.95:
      long = int(round(math.exp(rng.uniform(math.log(600), math.log(1600)))))
    else:
      long = int(rng.integers(150, 451))
    short = int(round(long / rng.choice(ratios, p=weights)))
    sizes.append((long, short) if rng.random() < 0.25 else (short, long))
  return sizes


def synthetic_jpeg(rng: np.random.Generator, height: int, width: int, quality: int = 90) -> bytes:
  """A JPEG of smooth noise at three scales (1/16, 1/4 and full resolution) around mid grey."""
  out = np.full((height, width, 3), 128.0, np.float32)
  for amplitude, factor in ((60.0, 16), (30.0, 4), (10.0, 1)):
    small = amplitude * rng.standard_normal((max(height // factor, 1), max(width // factor, 1), 3), np.float32)
    if factor > 1:
      small = np.stack([np.asarray(Image.fromarray(small[..., c], mode="F").resize((width, height),
                                                                                  Image.BICUBIC))
                        for c in range(3)], axis=-1)
    out += small
  buf = io.BytesIO()
  Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def _image(job: tuple[int, int, int, int]) -> bytes:
  seed, index, height, width = job
  return synthetic_jpeg(np.random.default_rng([seed, index]), height, width)


def _add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(blob)
  tar.addfile(info, io.BytesIO(blob))


def write_fake_ilsvrc(manual_dir: str, num_train: int, num_val: int, seed: int = 0) -> dict:
  """ILSVRC2012_img_{train,val}.tar of synthetic JPEGs: ``num_train`` images spread over the 100 classes and
  ``num_val`` validation images named after lines of TFDS's ground truth that belong to the 100 classes."""
  os.makedirs(manual_dir, exist_ok=True)
  sizes = image_sizes(np.random.default_rng(seed), num_train + num_val)
  with futures.ThreadPoolExecutor(os.cpu_count()) as pool:  # PIL releases the GIL; one seed per image
    blobs = list(pool.map(_image, [(seed, i, h, w) for i, (h, w) in enumerate(sizes)]))
  wnids = imagenet100.CLASS_NAMES
  with tarfile.open(os.path.join(manual_dir, imagenet100.TRAIN_TAR), "w") as outer:
    for c, wnid in enumerate(wnids):
      inner_buf = io.BytesIO()
      with tarfile.open(fileobj=inner_buf, mode="w") as inner:
        for i in range(c, num_train, len(wnids)):
          _add(inner, f"{wnid}_{i}.JPEG", blobs[i])
      _add(outer, f"{wnid}.tar", inner_buf.getvalue())
  labels = imagenet100.read_validation_labels(imagenet100.default_validation_labels_path())
  lines = [i + 1 for i, wnid in enumerate(labels) if wnid.strip() in wnids][:num_val]
  with tarfile.open(os.path.join(manual_dir, imagenet100.VAL_TAR), "w") as tar:
    for line, blob in zip(lines, blobs[num_train:]):
      _add(tar, f"ILSVRC2012_val_{line:08d}.JPEG", blob)
  return {"images": len(blobs), "mean_kb": round(float(np.mean([len(b) for b in blobs])) / 1024, 1),
          "mean_megapixels": round(float(np.mean([h * w for h, w in sizes])) / 1e6, 3),
          "share_long_side_over_672": round(float(np.mean([max(s) >= 672 for s in sizes])), 3)}


def cpu_seconds() -> float:
  """User + system CPU time of this process, its reaped children and its live children (grain workers)."""
  me = psutil.Process()
  total = sum(me.cpu_times()[:2])
  reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
  total += reaped.ru_utime + reaped.ru_stime
  for child in me.children(recursive=True):
    try:
      total += sum(child.cpu_times()[:2])
    except psutil.Error:
      pass
  return total


def wait_for_children(timeout_s: float = 10.0) -> None:
  """Waits until the workers of earlier iterators have exited (their CPU time must not leak into the next)."""
  gc.collect()
  deadline = time.monotonic() + timeout_s
  while _workers() and time.monotonic() < deadline:
    time.sleep(0.05)


def _workers() -> list:
  """Live child processes other than multiprocessing's long-lived resource tracker."""
  out = []
  for child in psutil.Process().children(recursive=True):
    try:
      if "resource_tracker" not in " ".join(child.cmdline()):
        out.append(child)
    except psutil.Error:
      pass
  return out


def rate(images: int, wall: float, cpu: float) -> dict:
  return {"images": images, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
          "images_per_s": round(images / wall, 1), "images_per_cpu_s": round(images / cpu, 1)}


def time_transforms(records: list[bytes], size: int, resize: int, draft: bool) -> dict:
  """Decode + train transform and decode + eval transform of every record, one at a time (per-core rates)."""
  out = {}
  for split in ("train", "eval"):
    tic_wall, tic_cpu = time.perf_counter(), time.process_time()
    for i, blob in enumerate(records):
      img = transforms.decode_pil(blob, 3)
      if split == "train":
        img = transforms.random_resized_crop(img, size, np.random.default_rng([0, i]), draft=draft)
      else:
        img = transforms.resize_center_crop(img, resize, size, draft=draft)
      transforms.to_array(img, 3)
    out[split] = rate(len(records), time.perf_counter() - tic_wall, time.process_time() - tic_cpu)
  return out


def time_float_conversion(batch: int, size: int, repeats: int = 5) -> dict:
  """What the pipeline's uint8 → float32 [0, 1] conversion of a batch costs per image (numpy, one core)."""
  images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  tic = time.process_time()
  for _ in range(repeats):
    np.multiply(images, np.float32(1 / 255), dtype=np.float32)
  per_image = (time.process_time() - tic) / (repeats * batch)
  return {"ms_per_image": round(per_image * 1e3, 3), "mb_per_image_uint8": round(size * size * 3 / 2**20, 3),
          "mb_per_image_float32": round(size * size * 12 / 2**20, 3)}


def time_pipeline(cfg, split: str, batch: int, warmup: int, timed: int, ahead: int) -> dict:
  """Rates of the real pipeline over ``timed`` batches after ``warmup`` batches (worker start-up and the first
  batches prefetched ahead). Eval streams are ``ahead`` batches longer than what is read, so that the workers
  are still running (and their CPU time is counted) when the timed window closes."""
  wait_for_children()
  tic = time.perf_counter()
  if split == "train":
    it = data.train_batches(cfg, global_batch_size=batch, seed=0)
  else:  # the train split through the eval transforms: more images than the validation split
    it = data.eval_batches(cfg, global_batch_size=batch, split="train",
                           max_examples=batch * (warmup + timed + ahead))
  for _ in range(warmup):
    next(it)
  startup = time.perf_counter() - tic
  tic_wall, tic_cpu = time.perf_counter(), cpu_seconds()
  n = sum(len(next(it)["label"]) for _ in range(timed))
  out = rate(n, time.perf_counter() - tic_wall, cpu_seconds() - tic_cpu)
  out["warmup_s"] = round(startup, 2)
  del it
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--images", type=int, default=400,
                 help="synthetic train images (plus 32 validation images); raised to what --workers needs")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--batches", type=int, default=16, help="timed batches per pipeline run (at least 4 × workers)")
  p.add_argument("--transform_images", type=int, default=400, help="images timed one at a time per transform")
  p.add_argument("--workers", default="0,1,2", help="grain worker processes to time (comma-separated)")
  p.add_argument("--image_size", type=int, default=336, help="model input side (configs/imagenet.py: 336)")
  p.add_argument("--eval_resize", type=int, default=384, help="eval resize of the shorter side (384)")
  p.add_argument("--quick", action="store_true", help="64 images, batch 4, workers 0: a smoke run")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.images, args.batch, args.batches, args.workers, args.transform_images = 64, 4, 8, "0", 64
  workers_list = [int(w) for w in args.workers.split(",")]
  runs = {w: dict(warmup=max(3, w), timed=max(args.batches, 4 * w), ahead=2 * w + 2) for w in workers_list}
  args.images = max([args.images] + [sum(r.values()) * args.batch for r in runs.values()])
  out = args.out if args.out is not None else benchlib.default_out("input_pipeline", args.quick)
  result = {"bench": "input_pipeline", "machine": benchlib.machine(), "args": vars(args)}
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as root:
    result["synthetic_images"] = write_fake_ilsvrc(os.path.join(root, "manual"), args.images, 32)
    cfg = data.default_data_config("imagenet100")
    cfg.data_dir, cfg.manual_dir = os.path.join(root, "tfds"), os.path.join(root, "manual")
    cfg.image_size, cfg.eval_resize, cfg.prefetch = args.image_size, args.eval_resize, 2
    tic = time.perf_counter()
    data.dataset_info(cfg)  # prepares the TFDS data set (array_record)
    result["prepare_s"] = round(time.perf_counter() - tic, 2)
    with tarfile.open(os.path.join(root, "manual", imagenet100.TRAIN_TAR)) as outer:
      records = [inner.extractfile(m).read() for member in outer.getmembers()
                 for inner in [tarfile.open(fileobj=outer.extractfile(member))] for m in inner.getmembers()]
    records = records[:args.transform_images]
    result["transforms"] = {f"draft_{name}": time_transforms(records, args.image_size, args.eval_resize, d)
                            for name, d in (("off", False), ("on", True))}
    result["float_conversion"] = time_float_conversion(args.batch, args.image_size)
    rows = []
    for workers in workers_list:
      cfg.num_workers = workers
      for split in ("train", "eval"):
        rows.append({"split": split, "workers": workers, **time_pipeline(cfg, split, args.batch, **runs[workers])})
        print(rows[-1], flush=True)
    result["pipeline"] = rows
  result["total_s"] = round(time.perf_counter() - start, 1)
  benchlib.write(result, out)
  print(table(result))
  return 0


def table(result: dict) -> str:
  """Markdown tables of the per-core transform rates and the pipeline rates."""
  t = result["transforms"]
  lines = ["| transform (one core) | draft off: images / CPU-s | draft on: images / CPU-s | gain |",
           "|---|---|---|---|"]
  for split in ("train", "eval"):
    off, on = t["draft_off"][split]["images_per_cpu_s"], t["draft_on"][split]["images_per_cpu_s"]
    lines.append(f"| {split} | {off} | {on} | {on / off:.2f}× |")
  lines += ["", "| pipeline | workers | images / s (wall) | images / CPU-s |", "|---|---|---|---|"]
  for r in result["pipeline"]:
    lines.append(f"| {r['split']} | {r['workers']} | {r['images_per_s']} | {r['images_per_cpu_s']} |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
