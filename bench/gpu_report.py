"""The JSON bookkeeping of bench/gpu_check.py (versions, saving, resuming) and the tables it prints."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys

import jax


def versions() -> dict:
  out = {"python": sys.version.split()[0]}
  for dist in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "optax", "numpy"):
    try:
      out[dist] = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
      pass
  out["jax"] = jax.__version__
  return out


def prior_result(out: str) -> dict | None:
  """The JSON an earlier run wrote at ``out`` (``--resume``), or None where there is none."""
  if not out or not os.path.exists(out):
    return None
  with open(out) as f:
    return json.load(f)


def resume_mismatch(prior: dict, device_kind: str, tiny: bool) -> str:
  """Why ``--resume`` must not continue ``prior`` here (another device kind or size), or ""."""
  kind = (prior.get("device") or {}).get("kind")
  if kind != device_kind or bool(prior.get("tiny")) != tiny:
    return (f"--resume: the JSON at --out was measured on {kind!r}{' (--tiny)' if prior.get('tiny') else ''}, "
            f"this run is on {device_kind!r}{' (--tiny)' if tiny else ''}; pass another --out or drop --resume")
  return ""


def done(result: dict, kind: str, name: str) -> bool:
  """Whether ``result`` (from an earlier run) already holds the row of job ``kind`` / ``name``."""
  if kind in ("train", "attack"):
    spec = json.loads(name)
    return any(all(row.get(k) == v for k, v in spec.items()) for row in result[kind])
  return kind in result


def save(result: dict, out: str) -> None:
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      json.dump(result, f, indent=1)


def tables(r: dict) -> str:
  lines = [f"device: {r['device']['kind']} ({r['device']['platform']}), jax {r['versions']['jax']}, "
           f"{r.get('elapsed_s')} s of a {r['budget_s']:.0f} s budget"
           + "".join(f" (resuming a run of {p.get('elapsed_s')} s)" for p in r.get("resumed", []))]
  n = r.get("numerics")
  if n:
    lines += ["", f"numerics vs {n['reference']} (batch {n['batch']}, T = {n['steps']}): "
              f"{'PASS' if n['ok'] else 'FAIL'}", "| variant | logits rel. err (forced) | step-1 rel. err | "
              "argmax fixations equal | train loss rel. err | CE rel. err | tol |", "|---|---|---|---|---|---|---|"]
    for name, v in n["logits"].items():
      t = n["train"].get(name, {})
      loss, ce = (f"{t[k]:.2e}" if k in t else "not run" for k in ("rel_err_loss", "rel_err_ce"))
      lines.append(f"| {name} | {v['rel_err_forced']:.2e} | {v['rel_err_step1']:.2e} | "
                   f"{v['argmax_fixations_equal']:.2f} | {loss} | {ce} | {v['tol']:.0e} |")
  p = r.get("peak")
  if p:
    lines += ["", f"matmul {p['n']}³ TFLOP/s: bf16 {p['bf16_tflops']}, f32 default {p['f32_default_tflops']}, "
              f"f32 highest {p['f32_highest_tflops']}; datasheet {p['datasheet_tflops'] or 'unknown device'}"]
  if r["train"]:
    lines += ["", "| model | batch | dtype | scan | remat | img/s | compile s | step ms | TFLOP/s | of matmul "
              "| GFLOP/img | program MB | device peak MB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in r["train"]:
      lines.append(f"| {t['model']} | {t['batch']} | {t['dtype']} | {t['scan']} | {t['remat']} | "
                   f"{t['images_per_s']} | {t['compile_s']} | {t['median_s'] * 1e3:.1f} | {t['tflops_per_s']} | "
                   f"{t['of_matmul_peak']} | {t['gflop_per_image']} | {t.get('program_mb')} | "
                   f"{t.get('device_peak_mb')} |")
  f = r.get("fed")
  if f:
    lines += ["", f"fed rate ({f['model']} {f['dtype']} {f['scan']}, batch {f['batch']}, {f['workers']} workers on "
              f"{f['cpus']} cores, decoder {f.get('decoder_used', f['decoder'])}, {f['image_dtype']} hand-over): "
              f"{f['fed_images_per_s']} img/s fed vs {f['resident_images_per_s']} resident = starvation ratio "
              f"{f['starvation_ratio']}"]
  if r["attack"]:
    lines += ["", "| attack | steps | remat | batch | iterations | images × iterations / s | compile s | "
              "program MB |", "|---|---|---|---|---|---|---|---|"]
    for a in r["attack"]:
      lines.append(f"| {a['attack']} | {a['steps']} | {a['remat']} | {a['batch']} | {a['iterations']} | "
                   f"{a['images_x_iterations_per_s']} | {a['compile_s']} | {a.get('program_mb')} |")
  for s in r["skipped"]:
    lines.append(f"skipped {s['kind']} {s['job']}: {s['reason']}")
  for e in r["errors"]:
    lines.append(f"ERROR {e['kind']} {e['job']}: {e['error'][:300]}")
  return "\n".join(lines)
