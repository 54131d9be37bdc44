"""Input pipeline throughput: imagenet100's decoders, transforms and grain pipeline on synthetic JPEGs of
ImageNet's sizes (bench/synthetic_imagenet.py), before / after issue 27, and the fed rate of a training loop.

  python bench/input_pipeline.py [--workers 0,1,2] [--rounds 3] [--batch 16] [--batches 16]
                                 [--fed_workers 2|none] [--fed_batch 16] [--fed_steps 8] [--quick]

Builds the real ``imagenet100`` TFDS data set from fake ILSVRC2012 tars in a temporary folder, then measures:

* ``decoders``: JPEG bytes -> RGB array, one image at a time: PIL, simplejpeg, OpenCV, PyTurboJPEG (where its
  system library is found): images per CPU-second = per core;
* ``transforms``: decode + RandomResizedCrop(336) + flip (train) or Resize(384) + CenterCrop(336) (eval), one
  image at a time, through the imagenet100 task with ``decoder`` "pil" (before), "pil" with PIL's reduced-size
  decode (``draft``), "turbo" with ``downscale`` "area" (issue 27's first version) and "turbo" with "fast"
  (after: libjpeg-turbo + OpenCV, DCT-scaled decode, rsrnn_jax/data/decoders.py);
* ``pipeline``: ``data.train_batches`` / ``data.eval_batches`` with each worker count, **before** (decoder
  "pil", float32 batches, ``prefetch`` threads inside each worker: the code before issue 27) and **after** (the
  defaults: decoder "turbo", downscale "fast", uint8 train batches built in shared memory), alternated
  within each of ``--rounds`` rounds (order reversed every other round), so that the machine's load hits both:
  images/s of wall time and per CPU-second of this process and its workers (psutil); ``pipeline_medians`` has
  the medians over the rounds and the after ÷ before ratios;
* ``fed`` (unless ``--fed_workers none``): bench/fed_rate.py with a small RS-RNN (toy widths, 336² input,
  float32) on this machine's devices: training images/s fed by the pipeline with ``--fed_workers`` workers
  against the same step on a resident batch (the starvation ratio), before and after.

Images per CPU-second hardly depend on what else runs on the machine (unlike images/s), which is why they are
the headline: cores needed = images/s wanted ÷ images per CPU-second. Every row records the load average.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402  (puts the repository on sys.path)

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from rsrnn_jax import data  # noqa: E402
from rsrnn_jax.data import imagenet100, tasks, transforms  # noqa: E402
from synthetic_imagenet import image_sizes, prepared_config, synthetic_jpeg  # noqa: E402,F401

# before: the code before issue 27 (PIL, float32 batches, `prefetch` threads inside each worker: the bench's prefetch
# is 2); after: today's defaults (libjpeg-turbo + OpenCV with the 'fast' downscale, uint8 batches built in shared
# memory by workers without threads of their own).
VARIANTS = {"before": dict(decoder="pil", image_dtype="float32", worker_threads=2),
            "after": dict(decoder="turbo", image_dtype="uint8", worker_threads=0, downscale="fast")}
TRANSFORMS = (("pil", "pil", "fast", False), ("pil_draft", "pil", "fast", True), ("turbo_area", "turbo", "area", False),
              ("turbo", "turbo", "fast", False))  # (row, decoder, downscale, PIL draft)


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


def _decoders() -> dict:
  """JPEG bytes -> uint8 RGB, per library (PyTurboJPEG only where its system libturbojpeg is found)."""
  import cv2
  import simplejpeg
  cv2.setNumThreads(1)
  flag = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)  # OpenCV >= 4.11 decodes to RGB directly
  out = {"pil": lambda b: np.asarray(transforms.decode_pil(b, 3)),
         "simplejpeg": lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB"),
         "opencv": lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), flag)}
  try:
    import turbojpeg
    out["pyturbojpeg"] = turbojpeg.TurboJPEG().decode
  except Exception as e:  # noqa: BLE001  (not in requirements.txt: needs the system's libturbojpeg)
    out["pyturbojpeg"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
  return out


def time_decoders(records: list[bytes]) -> dict:
  """Decode only, one image at a time (images per CPU-second = per core); a string where a library is missing."""
  out = {}
  for name, fn in _decoders().items():
    if isinstance(fn, str):
      out[name] = {"unavailable": fn}
      continue
    fn(records[0])
    tic_wall, tic_cpu = time.perf_counter(), time.process_time()
    for blob in records:
      fn(blob)
    out[name] = rate(len(records), time.perf_counter() - tic_wall, time.process_time() - tic_cpu)
  return out


def time_transforms(records: list[bytes], size: int, resize: int, decoder: str, downscale: str = "fast",
                    draft: bool = False) -> dict:
  """Decode + train transform and decode + eval transform of every record, one at a time (per-core rates):
  the imagenet100 task's own code with ``decoder`` and ``downscale`` ("pil" with ``draft``: PIL's reduced-size
  decode). The train crop is written into a preallocated slot, as the pipeline does."""
  cfg = data.default_data_config("imagenet100")
  cfg.image_size, cfg.eval_resize, cfg.decoder, cfg.downscale = size, resize, decoder, downscale
  task = tasks.task_for(cfg)
  train = (lambda b, rng, out: transforms.to_array(transforms.random_resized_crop(
      transforms.decode_pil(b, 3), size, rng, draft=True), 3)) if draft else task.train
  slot = np.empty((size, size, 3), np.uint8)
  evaluate = (lambda b: transforms.to_array(transforms.resize_center_crop(
      transforms.decode_pil(b, 3), resize, size, draft=True), 3)) if draft else task.eval
  out = {}
  for split in ("train", "eval"):
    tic_wall, tic_cpu = time.perf_counter(), time.process_time()
    for i, blob in enumerate(records):
      train(blob, np.random.default_rng([0, i]), out=slot) if split == "train" else evaluate(blob)
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
  out["load_average_1"] = round(os.getloadavg()[0], 2)
  del it
  return out


def pipeline_rounds(cfg, workers_list, rounds: int, batch: int, runs: dict) -> list[dict]:
  """Every (worker count, variant, split) once per round, before and after alternated (order reversed in odd
  rounds)."""
  rows = []
  for r in range(rounds):
    for workers in workers_list:
      order = list(VARIANTS) if r % 2 == 0 else list(VARIANTS)[::-1]
      for variant in order:
        cfg.update(VARIANTS[variant], num_workers=workers)
        for split in ("train", "eval"):
          rows.append({"round": r, "split": split, "workers": workers, "variant": variant,
                       **time_pipeline(cfg, split, batch, **runs[workers])})
          print(rows[-1], flush=True)
  return rows


def medians(rows: list[dict]) -> list[dict]:
  """Per (split, workers): the median images per CPU-second and per second of each variant and after ÷ before."""
  out = []
  for split, workers in dict.fromkeys((r["split"], r["workers"]) for r in rows):
    row = {"split": split, "workers": workers}
    for variant in VARIANTS:
      mine = [r for r in rows if (r["split"], r["workers"], r["variant"]) == (split, workers, variant)]
      for key in ("images_per_cpu_s", "images_per_s"):
        row[f"{variant}_{key}"] = round(statistics.median(r[key] for r in mine), 1)
    row["ratio_per_cpu_s"] = round(row["after_images_per_cpu_s"] / row["before_images_per_cpu_s"], 2)
    row["ratio_per_s"] = round(row["after_images_per_s"] / row["before_images_per_s"], 2)
    out.append(row)
  return out


def fed_rows(cfg, args) -> list[dict]:
  import fed_rate
  config = fed_rate.small_cpu_config(args.fed_batch)
  rows = []
  for variant in VARIANTS:
    cfg.update(VARIANTS[variant])
    rows.append({"variant": variant, **fed_rate.measure(config, cfg, workers=int(args.fed_workers),
                                                        steps=args.fed_steps, repeats=args.rounds),
                 "load_average_1": round(os.getloadavg()[0], 2)})
    print(rows[-1], flush=True)
  return rows


def _records(root: str, n: int) -> list[bytes]:
  with tarfile.open(os.path.join(root, "manual", imagenet100.TRAIN_TAR)) as outer:
    records = [inner.extractfile(m).read() for member in outer.getmembers()
               for inner in [tarfile.open(fileobj=outer.extractfile(member))] for m in inner.getmembers()]
  return records[:n]


def _args(argv):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--images", type=int, default=400,
                 help="synthetic train images (plus 32 validation images); raised to what --workers needs")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--batches", type=int, default=32, help="timed batches per pipeline run (at least 4 × workers)")
  p.add_argument("--rounds", type=int, default=3, help="alternated before/after rounds (medians reported)")
  p.add_argument("--transform_images", type=int, default=400, help="images timed one at a time per transform")
  p.add_argument("--workers", default="0,1,2", help="grain worker processes to time (comma-separated)")
  p.add_argument("--image_size", type=int, default=336, help="model input side (configs/imagenet.py: 336)")
  p.add_argument("--eval_resize", type=int, default=384, help="eval resize of the shorter side (384)")
  p.add_argument("--fed_workers", default="2", help="workers of the fed-rate run ('none': skip it)")
  p.add_argument("--fed_batch", type=int, default=16)
  p.add_argument("--fed_steps", type=int, default=8, help="timed steps per fed / resident run")
  p.add_argument("--quick", action="store_true", help="64 images, batch 4, workers 0, 1 round: a smoke run")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.quick:
    args.images, args.batch, args.batches, args.workers, args.transform_images = 64, 4, 8, "0", 64
    args.rounds, args.fed_batch, args.fed_steps = 1, 4, 2
    args.fed_workers = "none" if args.fed_workers == "2" else args.fed_workers
  return args


def main(argv=None) -> int:
  args = _args(argv)
  workers_list = [int(w) for w in args.workers.split(",")]
  runs = {w: dict(warmup=max(3, w), timed=max(args.batches, 4 * w), ahead=2 * w + 2) for w in workers_list}
  args.images = max([args.images] + [sum(r.values()) * args.batch for r in runs.values()])
  out = args.out if args.out is not None else benchlib.default_out("input_pipeline", args.quick)
  result = {"bench": "input_pipeline", "machine": benchlib.machine(), "args": vars(args)}
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as root:
    tic = time.perf_counter()
    cfg, result["synthetic_images"] = prepared_config(root, args.images, image_size=args.image_size,
                                                      eval_resize=args.eval_resize)
    result["prepare_s"] = round(time.perf_counter() - tic, 2)
    records = _records(root, args.transform_images)
    result["decoders"] = time_decoders(records)
    result["transforms"] = {name: time_transforms(records, args.image_size, args.eval_resize, dec, down, draft)
                            for name, dec, down, draft in TRANSFORMS}
    result["float_conversion"] = time_float_conversion(args.batch, args.image_size)
    result["pipeline"] = pipeline_rounds(cfg, workers_list, args.rounds, args.batch, runs)
    result["pipeline_medians"] = medians(result["pipeline"])
    if args.fed_workers != "none":
      result["fed"] = fed_rows(cfg, args)
  result["total_s"] = round(time.perf_counter() - start, 1)
  benchlib.write(result, out)
  print(table(result))
  return 0


def table(result: dict) -> str:
  """Markdown tables: decoders and transforms per core, the pipeline before/after, the fed rate."""
  lines = ["| decode only (one core) | images / CPU-s |", "|---|---|"]
  for name, r in result["decoders"].items():
    lines.append(f"| {name} | {r.get('images_per_cpu_s', r.get('unavailable'))} |")
  t = result["transforms"]
  lines += ["", "| transform (one core), images / CPU-s | pil (before) | pil + draft | turbo, area | turbo, fast "
            "(after) | after ÷ before |", "|---|---|---|---|---|---|"]
  for split in ("train", "eval"):
    a, b, c, d = (t[k][split]["images_per_cpu_s"] for k, *_ in TRANSFORMS)
    lines.append(f"| {split} | {a} | {b} | {c} | {d} | {d / a:.2f}× |")
  lines += ["", "| pipeline | workers | before: images / CPU-s (images / s) | after: images / CPU-s (images / s) | "
            "after ÷ before per CPU-s |", "|---|---|---|---|---|"]
  for r in result["pipeline_medians"]:
    lines.append(f"| {r['split']} | {r['workers']} | {r['before_images_per_cpu_s']} ({r['before_images_per_s']}) | "
                 f"{r['after_images_per_cpu_s']} ({r['after_images_per_s']}) | {r['ratio_per_cpu_s']}× |")
  if result.get("fed"):
    lines += ["", "| fed rate | workers | fed images / s | resident images / s | starvation ratio |",
              "|---|---|---|---|---|"]
    for r in result["fed"]:
      lines.append(f"| {r['variant']} | {r['workers']} | {r['fed_images_per_s']} | {r['resident_images_per_s']} | "
                   f"{r['starvation_ratio']} |")
  return "\n".join(lines)


if __name__ == "__main__":
  sys.exit(main())
