"""Training crops decoded on the GPU by NVIDIA DALI (nvJPEG): ``config.data.decoder = "dali"``, off by default.

The grain workers still read the records and draw every crop box and flip from the same generators as the host
decoders (:func:`rsrnn_jax.data.decoders.crop_and_flip`, the box from the JPEG header's size), so the
augmentation is the same; they hand over the JPEG bytes, the boxes and the flips (:func:`encoded_batch`, about
a third of a uint8 batch's bytes). In the training process :func:`decoded` feeds them to a DALI pipeline:
``decoders.image_slice`` (nvJPEG decodes only the box, on the GPU), ``resize`` to size² (bilinear with
antialiasing, PIL's filter), ``flip``; the uint8 batch comes back as a jax.Array on the GPU (DLPack, one copy
on the device). The pixels agree with the host decoders within JPEG decoder tolerance (nvJPEG's IDCT and
chroma upsampling are not libjpeg-turbo's).

Nothing of DALI is imported until a GPU run asks for it. Without the package or without a GPU,
:func:`resolve` logs one line and the run decodes on the host (``"turbo"``). Install on
a GPU host: ``pip install nvidia-dali-cuda130`` (CUDA 13; ``-cuda120`` for CUDA 12); DALI 2.x also needs
``nvidia-nvimgcodec-cu13`` (``-cu12``). Not in requirements.txt (GPU hosts only). Only single-GPU processes
(one process per GPU, the Slurm/MPI layout of docs/scaling.md) are supported: the batch lands on local device 0.
Not run on this project's CPU machines: tests cover the fallback and :func:`encoded_batch`; the DALI pipeline
itself waits for a GPU host with DALI (docs/scaling.md § GPUs).
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from rsrnn_jax.data import decoders, transforms

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install nvidia-dali-cuda130 nvidia-nvimgcodec-cu13 (CUDA 12: -cuda120 / -cu12)"


def unavailable_reason() -> str:
  """Why the DALI decoder cannot run in this process ("" when it can)."""
  try:
    import nvidia.dali  # noqa: F401,PLC0415  (lazy: GPU hosts only)
  except ImportError as e:
    return f"nvidia.dali is not installed ({e}); {INSTALL_HINT}"
  import jax  # noqa: PLC0415
  if not any(d.platform == "gpu" for d in jax.local_devices()):
    return f"JAX sees no GPU (backend {jax.default_backend()!r})"
  return ""


def resolve(decoder: str) -> str:
  """The decoder that will run: ``decoder``, or ``"turbo"`` (with one logged line saying why) where ``"dali"``
  cannot run in this process (package missing or no GPU)."""
  if decoders.check(decoder) != "dali":
    return decoder
  why = unavailable_reason()
  if why:
    log.warning("config.data.decoder='dali' falls back to 'turbo' (host decoding): %s", why)
    return "turbo"
  return "dali"


def encoded_batch(data, rngs) -> dict[str, np.ndarray]:
  """The workers' part: JPEG bytes concatenated ('jpeg' uint8, 'jpeg_offsets' int64 [b + 1]), crop boxes
  ('crop' int32 [b, 4]: top, left, height, width in the original image) and flips ('flip' bool [b])."""
  blobs = [bytes(d) for d in data]
  draws = [decoders.crop_and_flip(rng, *decoders.jpeg_size(b)) for b, rng in zip(blobs, rngs)]
  return {"jpeg": np.frombuffer(b"".join(blobs), np.uint8),
          "jpeg_offsets": np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64),
          "crop": np.array([box for box, _ in draws], np.int32).reshape(-1, 4),
          "flip": np.array([f for _, f in draws], bool)}


class CropDecoder:
  """A DALI pipeline for batches of ``batch_size``: ROI decode (mixed), resize to size², flip."""

  def __init__(self, batch_size: int, size: int, num_threads: int = 4, device_id: int = 0):
    from nvidia.dali import fn, pipeline_def, types  # noqa: PLC0415

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1)
    def crops():
      jpeg = fn.external_source(name="jpeg", dtype=types.UINT8, ndim=1)
      anchor = fn.external_source(name="anchor", dtype=types.FLOAT, ndim=1)  # (x, y)
      shape = fn.external_source(name="shape", dtype=types.FLOAT, ndim=1)    # (width, height)
      flip = fn.external_source(name="flip", dtype=types.INT32, ndim=0)
      images = fn.decoders.image_slice(jpeg, anchor, shape, device="mixed", output_type=types.RGB,
                                       normalized_anchor=False, normalized_shape=False)
      images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_LINEAR, antialias=True)
      return fn.flip(images, horizontal=flip)

    self.batch_size = batch_size
    self.pipe = crops()
    self.pipe.build()

  def __call__(self, batch: dict):
    import jax  # noqa: PLC0415
    offsets, jpeg, crop = batch["jpeg_offsets"], batch["jpeg"], batch["crop"]
    self.pipe.feed_input("jpeg", [jpeg[offsets[i]:offsets[i + 1]] for i in range(len(crop))])
    self.pipe.feed_input("anchor", [np.array([left, top], np.float32) for top, left, _, _ in crop])
    self.pipe.feed_input("shape", [np.array([w, h], np.float32) for _, _, h, w in crop])
    self.pipe.feed_input("flip", [np.array(f, np.int32) for f in batch["flip"]])
    (images,) = self.pipe.run()
    return jax.dlpack.from_dlpack(images.as_tensor()).copy()  # DALI reuses its buffers: keep a copy


def decoded(batches: Iterator[dict], size: int, *, float_images: bool = False) -> Iterator[dict]:
  """``batches`` of :func:`encoded_batch` records as {'image': uint8 jax.Array [b, size, size, 3] on the GPU
  (float32 in [0, 1] with ``float_images``), 'label'}."""
  decoder = None
  for batch in batches:
    if decoder is None:
      decoder = CropDecoder(len(batch["crop"]), size)
    images = decoder(batch)
    yield {"image": transforms.unit_float(images) if float_images else images, "label": batch["label"]}
