"""bench/gpu_check.py (--tiny, so the GPU check cannot rot), bench/input_pipeline.py and the reduced-size JPEG
decode (``draft``) of rsrnn_jax/data/transforms.py that the pipeline bench measures."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rsrnn_jax.data import transforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))

import fab_projection  # noqa: E402
import fed_rate  # noqa: E402
import gpu_check  # noqa: E402
import gpu_numerics  # noqa: E402
import gpu_report  # noqa: E402
import input_pipeline  # noqa: E402
import synthetic_imagenet  # noqa: E402


def _jpeg(height: int, width: int, seed: int = 0) -> bytes:
  return input_pipeline.synthetic_jpeg(np.random.default_rng(seed), height, width)


# ---------------------------------------------------------------------------------------------------------
# Reduced-size JPEG decode.


def test_draft_leaves_small_images_bit_identical():
  blob = _jpeg(375, 500)  # ImageNet's usual size: every 336² crop is upsampled, nothing to gain
  for seed in range(5):
    a = transforms.random_resized_crop(transforms.decode_pil(blob, 3), 336, np.random.default_rng(seed))
    b = transforms.random_resized_crop(transforms.decode_pil(blob, 3), 336, np.random.default_rng(seed),
                                       draft=True)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  a = transforms.resize_center_crop(transforms.decode_pil(blob, 3), 384, 336)
  b = transforms.resize_center_crop(transforms.decode_pil(blob, 3), 384, 336, draft=True)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_draft_decodes_large_images_smaller_with_the_same_crop():
  blob = _jpeg(1200, 1600)
  img = transforms.decode_pil(blob, 3)
  assert transforms.draft_decode(img, 1600, 1200, 336, 336) == (0.5, 0.5)  # 1/4 would leave 300 < 336 rows
  assert img.size == (800, 600)
  assert transforms.draft_decode(transforms.decode_pil(blob, 3), 1600, 1200, 200, 150) == (0.125, 0.125)
  assert transforms.draft_decode(transforms.decode_pil(blob, 3), 600, 600, 336, 336) == (1.0, 1.0)
  png = io.BytesIO()
  Image.new("RGB", (1600, 1200)).save(png, format="PNG")
  assert transforms.draft_decode(transforms.decode_pil(png.getvalue(), 3), 1600, 1200, 336, 336) == (1.0, 1.0)
  diffs = []
  for seed in range(8):
    r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
    a = np.asarray(transforms.random_resized_crop(transforms.decode_pil(blob, 3), 336, r1), np.float32)
    b = np.asarray(transforms.random_resized_crop(transforms.decode_pil(blob, 3), 336, r2, draft=True),
                   np.float32)
    assert a.shape == b.shape == (336, 336, 3)
    assert r1.random() == r2.random()  # the same random draws: same crop, same flip
    diffs.append(np.abs(a - b).mean())
  assert max(diffs) < 3.0, diffs  # same window; DCT-domain instead of bilinear downscaling (0-255 scale)
  a = np.asarray(transforms.resize_center_crop(transforms.decode_pil(blob, 3), 384, 336), np.float32)
  b = np.asarray(transforms.resize_center_crop(transforms.decode_pil(blob, 3), 384, 336, draft=True),
                 np.float32)
  assert a.shape == b.shape == (336, 336, 3) and np.abs(a - b).mean() < 3.0


# ---------------------------------------------------------------------------------------------------------
# Input pipeline bench.


def test_synthetic_imagenet_sizes():
  sizes = input_pipeline.image_sizes(np.random.default_rng(0), 2000)
  long = np.array([max(s) for s in sizes])
  assert 0.82 < np.mean(long == 500) < 0.88
  assert long.max() <= 1600 and long.min() >= 150
  assert 0.15 < np.mean([h > w for h, w in sizes]) < 0.35  # a quarter portrait
  img = Image.open(io.BytesIO(_jpeg(375, 500)))
  assert img.format == "JPEG" and img.size == (500, 375)


def test_input_pipeline_quick(tmp_path):
  out = tmp_path / "input_pipeline.json"
  assert input_pipeline.main(["--quick", "--out", str(out)]) == 0
  result = json.loads(out.read_text())
  assert result["synthetic_images"]["images"] == 64 + 32
  for name in ("pil", "pil_draft", "turbo_area", "turbo"):
    for split in ("train", "eval"):
      assert result["transforms"][name][split]["images_per_cpu_s"] > 0
  assert result["decoders"]["simplejpeg"]["images_per_cpu_s"] > 0 and result["decoders"]["opencv"]["images"] == 64
  assert {(r["split"], r["workers"], r["variant"]) for r in result["pipeline"]} == {
      (s, 0, v) for s in ("train", "eval") for v in ("before", "after")}
  assert all(r["images"] > 0 and r["images_per_s"] > 0 and "load_average_1" in r for r in result["pipeline"])
  assert [(m["split"], m["workers"]) for m in result["pipeline_medians"]] == [("train", 0), ("eval", 0)]
  assert all(m["ratio_per_cpu_s"] > 0 for m in result["pipeline_medians"]) and "fed" not in result
  assert result["float_conversion"]["mb_per_image_float32"] == pytest.approx(336 * 336 * 12 / 2**20, abs=1e-3)


def test_fed_rate_on_a_toy_model(tmp_path):
  """bench/fed_rate.py end to end at toy sizes: the real pipeline (uint8, in-process) feeding a jitted step."""
  data_cfg, stats = synthetic_imagenet.prepared_config(str(tmp_path), 12, image_size=32, eval_resize=36, num_val=2)
  assert stats["images"] == 14
  config = gpu_numerics.make_config("rsrnn", tiny=True, unroll=0, batch=4)
  row = fed_rate.measure(config, data_cfg, workers=0, steps=2, warmup=1, repeats=1)
  assert row["decoder_used"] == "turbo" and row["image_dtype"] == "uint8" and row["batch"] == 4
  assert row["fed_images_per_s"] > 0 and row["resident_images_per_s"] > 0
  assert row["starvation_ratio"] == pytest.approx(row["fed_images_per_s"] / row["resident_images_per_s"], rel=1e-2)


# ---------------------------------------------------------------------------------------------------------
# GPU check.


def test_gpu_check_grid_and_peaks():
  specs = gpu_check.train_specs(gpu_check.FULL, tiny=False)
  keys = [tuple(sorted(s.items())) for s in specs]
  assert len(keys) == len(set(keys)) == 16 + 16 + 4  # 2 glimpse models × 16, FF-CNN × 4 (no scan)
  assert specs[0] == dict(model="rsrnn", batch=256, dtype="bfloat16", unroll=1, remat=False, scan="rolled")
  attacks = gpu_check.attack_specs(gpu_check.FULL, tiny=False)
  assert {(a["steps"], a["remat"]) for a in attacks if a["attack"] == "pgd"} == {
      (16, False), (16, True), (24, False), (24, True)}

  class Device:
    device_kind = "NVIDIA H100 PCIe"
  assert gpu_check.datasheet(Device())["bf16"] == 756.0
  Device.device_kind = "NVIDIA H200"
  assert gpu_check.datasheet(Device())["matched"] == "H200"
  Device.device_kind = "cpu"
  assert gpu_check.datasheet(Device()) == {}


def test_gpu_check_flops_and_resume_bookkeeping(tmp_path):
  """A backend without a cost analysis (the H200's pre-compile one is None) gives no FLOPs, not a crash; a resumed
  run keeps the rows an earlier run wrote and reruns only the jobs it lacks."""
  assert gpu_check._flops_of(None) is None and gpu_check._flops_of([]) is None and gpu_check._flops_of({}) is None
  assert gpu_check._flops_of({"flops": 3}) == 3.0 and gpu_check._flops_of([{"flops": 2.5}]) == 2.5
  spec = gpu_check.train_specs(gpu_check.FULL, tiny=False)[0]
  result = {"train": [{**spec, "images_per_s": 1.0}], "attack": [], "peak": {}}
  assert gpu_report.done(result, "train", json.dumps(spec)) and gpu_report.done(result, "peak", "peak")
  other = {**spec, "remat": True}
  assert not gpu_report.done(result, "train", json.dumps(other)) and not gpu_report.done(result, "numerics", "n")
  assert gpu_report.prior_result(str(tmp_path / "none.json")) is None
  h200 = {"device": {"kind": "NVIDIA H200"}, "tiny": False}
  assert gpu_report.resume_mismatch(h200, "NVIDIA H200", tiny=False) == ""
  assert "drop --resume" in gpu_report.resume_mismatch(h200, "NVIDIA A100-SXM4-80GB", tiny=False)
  assert "drop --resume" in gpu_report.resume_mismatch(h200, "NVIDIA H200", tiny=True)
  (tmp_path / "r.json").write_text(json.dumps(result))
  assert gpu_report.prior_result(str(tmp_path / "r.json")) == result


@pytest.mark.slow
def test_gpu_check_tiny(tmp_path):
  out = tmp_path / "gpu_check.json"
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu_check.py"), "--tiny",
                         "--budget_s", "3000", "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  r = json.loads(out.read_text())
  assert r["device"]["platform"] == "cpu" and not r["skipped"] and not r["errors"]
  n = r["numerics"]
  assert n["ok"] and n["logits"]["bf16"]["rel_err_forced"] <= n["logits"]["bf16"]["tol"]
  assert len(n["train"]["bf16"]["losses"]) == len(n["train"]["bf16"]["reference"]) == 2
  assert r["peak"]["bf16_tflops"] > 0 and r["peak"]["f32_highest_tflops"] > 0
  assert {t["model"] for t in r["train"]} == {"rsrnn", "base_retina", "ff_cnn"}
  for t in r["train"]:
    assert t["images_per_s"] > 0 and t["compile_s"] > 0 and t["gflop_per_image"] > 0 and t["program_mb"] > 0
    assert t["tflops_per_s"] >= 0 and len(t["times_s"]) == 2
  assert {t["scan"] for t in r["train"]} == {"rolled", "unrolled"} and any(t["remat"] for t in r["train"])
  assert len(r["attack"]) == 2 and all(a["images_x_iterations_per_s"] > 0 for a in r["attack"])
  assert "PASS" in proc.stdout and "| rsrnn |" in proc.stdout
  # --resume: the rows kept stay as they were, the two dropped ones are measured again, nothing else runs.
  kept_train, kept_attack = r["train"][:2], r["attack"][:1]
  out.write_text(json.dumps({**r, "train": kept_train, "attack": kept_attack}))
  proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu_check.py"), "--tiny", "--resume",
                         "--budget_s", "3000", "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=1200)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  r2 = json.loads(out.read_text())
  assert r2["train"][:2] == kept_train and r2["attack"][:1] == kept_attack and r2["numerics"] == n
  assert [t["model"] for t in r2["train"]] == [t["model"] for t in r["train"]] and len(r2["attack"]) == 2
  assert proc.stdout.count("[gpu_check]") == 2 and r2["resumed"][0]["elapsed_s"] == r["elapsed_s"]


def test_fab_projection_quick(tmp_path):
  out = tmp_path / "fab_projection.json"
  fab_projection.main(["--quick", "--out", str(out)])
  result = json.loads(out.read_text())
  assert [(r["shape"], r["norm"], r["rows"]) for r in result["results"]] == [([32, 32, 1], n, 16) for n in ("linf", "l2")]
  for r in result["results"]:
    assert r["project_hyperplane"]["median_s"] > 0 and r["argsort"]["median_s"] > 0 and r["sort_over_projection"] > 0
  assert "load_average_1_5_15_at_end" in result["machine"]
