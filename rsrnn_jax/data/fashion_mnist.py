"""Locating and parsing the raw Fashion-MNIST idx files (no download, ever).

The project's only real offline data set is the Debian package ``dataset-fashion-mnist``, which installs the
four official idx files (gzip-compressed) in ``/usr/share/datasets/fashion-mnist``. ``find_fashion_mnist`` finds
them (or installs the package when it may: running as root with ``apt-get`` available) and ``load_fashion_mnist``
parses one split into numpy arrays.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import zlib

import numpy as np

from rsrnn_jax import workdir as workdir_lib

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
INSTALL_COMMAND = f"sudo apt-get install -y {DEBIAN_PACKAGE}"

# Label order of the official release.
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_PREFIX = {"train": "train", "test": "t10k"}
_SPLIT_SIZES = {"train": 60_000, "test": 10_000}
_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension

log = logging.getLogger(__name__)


def idx_file_names(split: str) -> tuple[str, str]:
  """(images, labels) file names of ``split`` ('train' | 'test') without the optional '.gz'."""
  if split not in _PREFIX:
    raise ValueError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
  p = _PREFIX[split]
  return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


_ALL_FILES = idx_file_names("train") + idx_file_names("test")


def _resolve(folder: pathlib.Path, name: str) -> pathlib.Path | None:
  for candidate in (folder / f"{name}.gz", folder / name):
    if candidate.is_file():
      return candidate
  return None


def _missing(folder: pathlib.Path) -> list[str]:
  return [n for n in _ALL_FILES if _resolve(folder, n) is None]


def _missing_error(folder: pathlib.Path, missing: list[str], explicit: bool) -> FileNotFoundError:
  files = ", ".join(f"{n}.gz" for n in missing)
  if explicit:
    hint = (f"point config.data.source_dir at a folder holding the four Fashion-MNIST idx files "
            f"(gzipped or not), or set it to None to use the Debian package (`{INSTALL_COMMAND}`)")
  else:
    hint = (f"install them with `{INSTALL_COMMAND}` or point config.data.source_dir at a folder holding "
            f"the four Fashion-MNIST idx files")
  return FileNotFoundError(f"Fashion-MNIST files missing in {folder} ({files}): {hint}.")


def _apt_install() -> None:
  """Installs the Debian package; runs ``apt-get update`` only if the first attempt fails."""
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  cmd = ["apt-get", "install", "-y", DEBIAN_PACKAGE]
  log.info("Fashion-MNIST not found: running %s", " ".join(cmd))
  if subprocess.run(cmd, env=env, check=False).returncode == 0:
    return
  log.info("apt-get install failed; running apt-get update and retrying")
  subprocess.run(["apt-get", "update"], env=env, check=False)
  subprocess.run(cmd, env=env, check=False)


def find_fashion_mnist(source_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """Returns a folder holding the four Fashion-MNIST idx files (``.gz`` or not).

  Looks in ``source_dir`` when given, otherwise in ``DEFAULT_SOURCE_DIR`` (the Debian package). When the default
  folder is incomplete and the process runs as root with ``apt-get`` on the PATH, installs
  ``dataset-fashion-mnist`` (``apt-get update`` only if the install fails without it) and looks again.
  Never downloads anything itself. Raises ``FileNotFoundError`` with a one-line fix otherwise.
  """
  explicit = source_dir is not None
  folder = pathlib.Path(source_dir if explicit else DEFAULT_SOURCE_DIR).expanduser()
  missing = _missing(folder)
  if not missing:
    return folder
  if not explicit and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
    _apt_install()
    missing = _missing(folder)
    if not missing:
      return folder
  raise _missing_error(folder, missing, explicit)


def _read(path: pathlib.Path) -> bytes:
  try:
    if path.suffix == ".gz":
      with gzip.open(path, "rb") as f:
        return f.read()
    return path.read_bytes()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:  # truncated or altered .gz
    raise ValueError(f"{path} is damaged ({e}): {_REPAIR}") from e


_REPAIR = (f"reinstall the files (`sudo apt-get install --reinstall {DEBIAN_PACKAGE}`) or point "
           f"config.data.source_dir at a folder with intact copies")


def parse_idx_images(data: bytes) -> np.ndarray:
  """Parses an idx3 image file's bytes into uint8 [N, rows, cols]."""
  if len(data) < 16:
    raise ValueError(f"not an idx3 ubyte image file ({len(data)} bytes, shorter than its header): {_REPAIR}")
  header = np.frombuffer(data, ">u4", count=4, offset=0)
  magic, n, rows, cols = (int(v) for v in header)
  if magic != _IMAGES_MAGIC:
    raise ValueError(f"not an idx3 ubyte image file (magic {magic}, expected {_IMAGES_MAGIC}): {_REPAIR}")
  images = np.frombuffer(data, np.uint8, offset=16)
  if images.size != n * rows * cols:
    raise ValueError(f"idx image file holds {images.size} bytes of pixels, header says {n}x{rows}x{cols} "
                     f"(truncated?): {_REPAIR}")
  return images.reshape(n, rows, cols)


def parse_idx_labels(data: bytes) -> np.ndarray:
  """Parses an idx1 label file's bytes into int64 [N]."""
  if len(data) < 8:
    raise ValueError(f"not an idx1 ubyte label file ({len(data)} bytes, shorter than its header): {_REPAIR}")
  magic, n = (int(v) for v in np.frombuffer(data, ">u4", count=2, offset=0))
  if magic != _LABELS_MAGIC:
    raise ValueError(f"not an idx1 ubyte label file (magic {magic}, expected {_LABELS_MAGIC}): {_REPAIR}")
  labels = np.frombuffer(data, np.uint8, offset=8)
  if labels.size != n:
    raise ValueError(f"idx label file holds {labels.size} labels, header says {n} (truncated?): {_REPAIR}")
  return labels.astype(np.int64)


def load_fashion_mnist(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28], labels int64 [N]) of ``split`` ('train': 60k, 'test': 10k) from ``folder``.

  The sizes are whatever the files hold (tests use small synthetic files); only the formats are checked.
  """
  folder = pathlib.Path(folder)
  image_name, label_name = idx_file_names(split)
  paths = [_resolve(folder, image_name), _resolve(folder, label_name)]
  if None in paths:
    raise _missing_error(folder, _missing(folder), explicit=True)
  try:
    images = parse_idx_images(_read(paths[0]))
  except ValueError as e:
    raise ValueError(f"{paths[0]}: {e}" if str(paths[0]) not in str(e) else str(e)) from e
  try:
    labels = parse_idx_labels(_read(paths[1]))
  except ValueError as e:
    raise ValueError(f"{paths[1]}: {e}" if str(paths[1]) not in str(e) else str(e)) from e
  if len(images) != len(labels):
    raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels in {folder}: {_REPAIR}")
  if labels.size and labels.max() >= len(CLASS_NAMES):
    raise ValueError(f"{paths[1]} is damaged: label {labels.max()} is out of range for Fashion-MNIST's 10 classes; "
                     f"{_REPAIR}")
  return images, labels


def write_idx(folder: str | os.PathLike, split: str, images: np.ndarray, labels: np.ndarray,
              *, compress: bool = True) -> pathlib.Path:
  """Writes ``images`` (uint8 [N, H, W]) and ``labels`` as idx files of ``split`` into ``folder`` (for tests)."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  images = np.ascontiguousarray(images, np.uint8)
  labels = np.ascontiguousarray(labels, np.uint8)
  image_name, label_name = idx_file_names(split)
  blobs = {
      image_name: np.array([_IMAGES_MAGIC, *images.shape], ">u4").tobytes() + images.tobytes(),
      label_name: np.array([_LABELS_MAGIC, len(labels)], ">u4").tobytes() + labels.tobytes(),
  }
  for name, blob in blobs.items():
    if compress:
      with gzip.open(folder / f"{name}.gz", "wb", compresslevel=1) as f:
        f.write(blob)
    else:
      (folder / name).write_bytes(blob)
  return folder


# ---------------------------------------------------------------------------------------------------------
# Which source a prepared dataset was built from.

SOURCE_RECORD = "source_fingerprint.json"  # in the prepared dataset's folder
_FINGERPRINTS: dict[tuple, str] = {}


def source_fingerprint(folder: str | os.PathLike) -> str:
  """SHA-256 over the four idx files' decompressed contents (a gzipped and a plain copy agree); cached per
  (path, size, mtime) in this process."""
  folder = pathlib.Path(folder)
  paths = [_resolve(folder, n) for n in _ALL_FILES]
  if None in paths:
    raise _missing_error(folder, _missing(folder), explicit=True)
  key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
  if key not in _FINGERPRINTS:
    h = hashlib.sha256()
    for name, path in zip(_ALL_FILES, paths):
      h.update(name.encode())
      h.update(hashlib.sha256(_read(path)).digest())
    _FINGERPRINTS[key] = h.hexdigest()[:32]
  return _FINGERPRINTS[key]


def source_record(dataset_dir: str | os.PathLike, source_dir: str | None, *, write: bool = False) -> None:
  """:func:`record_source` (``write=True``: a dataset was just prepared) or :func:`check_source`."""
  (record_source if write else check_source)(dataset_dir, source_dir)


def record_source(dataset_dir: str | os.PathLike, source_dir: str | None) -> None:
  """Writes which idx files (folder and fingerprint) the dataset prepared in ``dataset_dir`` was built from."""
  folder = find_fashion_mnist(source_dir)
  workdir_lib.write_json(os.path.join(dataset_dir, SOURCE_RECORD),
                         {"source_dir": str(folder.resolve()), "fingerprint": source_fingerprint(folder)})


def check_source(dataset_dir: str | os.PathLike, source_dir: str | None) -> None:
  """Raises ValueError if ``source_dir`` (when the user gave one) holds other files than those the prepared
  dataset in ``dataset_dir`` was built from: the prepared data would silently be used instead of them."""
  if source_dir is None:
    return
  path = pathlib.Path(dataset_dir) / SOURCE_RECORD
  if not path.is_file():
    if str(dataset_dir) not in _FINGERPRINTS:
      log.warning("%s was prepared without a record of its source; config.data.source_dir=%s is not checked "
                  "against it", dataset_dir, source_dir)
      _FINGERPRINTS[str(dataset_dir)] = ""
    return
  with open(path) as f:
    record = json.load(f)
  if source_fingerprint(find_fashion_mnist(source_dir)) != record.get("fingerprint"):
    raise ValueError(f"config.data.source_dir={source_dir} holds other Fashion-MNIST files than those the dataset "
                     f"prepared in {dataset_dir} was built from ({record.get('source_dir')}): set "
                     f"--config.data.data_dir to another folder to prepare a dataset from them, or delete "
                     f"{dataset_dir} to rebuild it")
