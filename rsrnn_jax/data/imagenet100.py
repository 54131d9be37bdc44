"""TFDS builder ``imagenet100``: the paper's 100-class ImageNet subset, read from the official ILSVRC2012 tars.

Classes: the 100 WNIDs the authors drew with ``np.random.choice`` (paper.md, Appendix; ``WNIDS_AS_STORED`` keeps
their stored order). Label ids follow ``CLASS_NAMES`` = the WNIDs sorted, as torchvision's ImageFolder numbers
the class folders, so label k here is label k in the authors' PyTorch runs.

Source (manual download, nothing is fetched): put the two official archives in the TFDS manual dir
(``<data_dir>/downloads/manual`` unless ``config.data.manual_dir`` says otherwise):
  * ``ILSVRC2012_img_train.tar`` (138 GB): a tar of 1000 per-class tars ``<wnid>.tar`` of JPEGs;
  * ``ILSVRC2012_img_val.tar`` (6.3 GB): 50,000 JPEGs ``ILSVRC2012_val_%08d.JPEG``.
Validation labels come from the ground truth TFDS ships for ``imagenet2012``
(``tensorflow_datasets/datasets/imagenet2012/validation_labels.txt``: line i is the WNID of
``ILSVRC2012_val_{i:08d}.JPEG``, i.e. the file names in sorted order, as the stock builder maps them). The
builder kwarg ``validation_labels_path`` points it at another file (tests use a small fake one).

Splits: ``train`` (~130k images: every train image of the 100 classes) and ``validation`` (the 5,000 val images
of the 100 classes). Features: ``image`` (JPEG bytes stored as they are in the archive; the few CMYK, grey or
PNG-in-disguise files are converted to RGB JPEG, as the stock builder does), ``label``, ``file_name``.
"""
from __future__ import annotations

import io
import logging
import os
import pathlib
import re
import tarfile
from typing import Iterator

import tensorflow_datasets as tfds
from PIL import Image

NAME = "imagenet100"
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"

# paper.md Appendix: imagenet_classes100.npy, in the order stored there.
WNIDS_AS_STORED = tuple("""
n03710193 n03131574 n02787622 n02834397 n03662601 n03956157 n03902125 n03124043 n04399382 n04355338 n09246464 n04335435
n01797886 n02971356 n01667778 n02137549 n02025239 n01847000 n03733131 n01806143 n01817953 n04591713 n02088632 n02172182
n04325704 n01694178 n04049303 n01843383 n03291819 n01833805 n02089078 n03781244 n01496331 n04589890 n02963159 n03272010
n01644900 n04275548 n02977058 n04162706 n01669191 n09472597 n02102480 n02701002 n02480495 n03249569 n03388183 n01824575
n02795169 n03785016 n04356056 n01807496 n02105412 n04201297 n02410509 n03127747 n02108089 n02028035 n02640242 n03494278
n02808440 n03837869 n03877845 n02077923 n03216828 n01531178 n02190166 n04037443 n03770679 n02892201 n04040759 n02106166
n03100240 n01768244 n01630670 n02100583 n02094258 n04536866 n01872401 n02317335 n02113712 n03796401 n02233338 n02087046
n03443371 n04146614 n02119789 n03877472 n01968897 n02492660 n01980166 n07614500 n04371430 n02138441 n01756291 n01871265
n02504458 n04251144 n04505470 n03180011
""".split())
CLASS_NAMES = tuple(sorted(WNIDS_AS_STORED))  # label id = position here (ImageFolder order)
_WNID_SET = frozenset(CLASS_NAMES)
log = logging.getLogger(__name__)
_VAL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Register at https://image-net.org/download-images, download the ILSVRC2012 training and validation archives,
and place them, unextracted and under these exact names, in the TFDS manual dir
(<data_dir>/downloads/manual by default; config.data.manual_dir overrides it):
  {TRAIN_TAR}   (138 GB, a tar of per-class tars <wnid>.tar)
  {VAL_TAR}     (6.3 GB, 50,000 JPEGs)
Only the 100 classes of the paper's ImageNet100 are kept.
"""


def default_validation_labels_path() -> pathlib.Path:
  """The validation ground truth TFDS ships with ``imagenet2012`` (one WNID per line, val image order)."""
  return pathlib.Path(tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt"))


def read_validation_labels(path: str | os.PathLike) -> list[str]:
  return pathlib.Path(path).read_text().strip().splitlines()


def validation_wnid(file_name: str, labels: list[str]) -> str:
  """WNID of an ``ILSVRC2012_val_%08d.JPEG`` file: line number = image number (1-based)."""
  m = _VAL_NAME_RE.match(os.path.basename(file_name))
  if m is None:
    raise ValueError(f"unexpected file {file_name!r} in {VAL_TAR} (expected ILSVRC2012_val_%08d.JPEG)")
  index = int(m.group(1)) - 1
  if not 0 <= index < len(labels):
    raise ValueError(f"{file_name}: no line {index + 1} in the validation labels file ({len(labels)} lines)")
  return labels[index].strip()


def normalize_jpeg(data: bytes) -> bytes:
  """Returns ``data`` if it is an RGB JPEG, else the image converted to an RGB JPEG (quality 95)."""
  with Image.open(io.BytesIO(data)) as img:
    if img.format == "JPEG" and img.mode == "RGB":
      return data
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _iter_files(tar: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
  for member in tar:
    if member.isfile():
      yield os.path.basename(member.name), member


def missing_archives_error(manual_dir: str | os.PathLike, missing: list[str]) -> FileNotFoundError:
  return FileNotFoundError(
      f"imagenet100 needs the official ILSVRC2012 archives; missing in {manual_dir}: {', '.join(missing)}. "
      f"Put {TRAIN_TAR} and {VAL_TAR} (unextracted) in {manual_dir} or set config.data.manual_dir to "
      f"their folder.\n{MANUAL_DOWNLOAD_INSTRUCTIONS}")


def find_manual_archives(dl_manager, names, error) -> pathlib.Path:
  """The TFDS manual dir, after checking that it holds every file in ``names``; otherwise raises
  ``error(manual_dir, missing_names)``."""
  manual_dir = getattr(dl_manager, "_manual_dir", None)  # path only for the error message
  try:
    manual_dir = pathlib.Path(dl_manager.manual_dir)
  except AssertionError:  # TFDS: manual dir missing or empty
    raise error(manual_dir, list(names)) from None
  missing = [n for n in names if not (manual_dir / n).is_file()]
  if missing:
    raise error(manual_dir, missing)
  return manual_dir


class Imagenet100(tfds.core.GeneratorBasedBuilder):
  """The paper's ImageNet100: 100 ILSVRC2012 classes, full train set and their 5,000 val images."""

  name = NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: paper.md Appendix WNIDs, labels in sorted-WNID order."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS

  def __init__(self, *, validation_labels_path: str | os.PathLike | None = None, **kwargs):
    kwargs.setdefault("file_format", "array_record")
    self._validation_labels_path = validation_labels_path
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
            "file_name": tfds.features.Text(),  # e.g. n01530575_10086.JPEG, ILSVRC2012_val_00000293.JPEG
        }),
        supervised_keys=("image", "label"),
        homepage="https://image-net.org/",
        citation=r"""@article{ILSVRC15,
  author  = {Olga Russakovsky and Jia Deng and Hao Su and Jonathan Krause and Sanjeev Satheesh and Sean Ma and
             Zhiheng Huang and Andrej Karpathy and Aditya Khosla and Michael Bernstein and Alexander C. Berg and
             Li Fei-Fei},
  title   = {{ImageNet Large Scale Visual Recognition Challenge}},
  journal = {International Journal of Computer Vision (IJCV)},
  year    = {2015},
  volume  = {115},
  number  = {3},
  pages   = {211-252}
}""",
    )

  def _split_generators(self, dl_manager):
    manual_dir = find_manual_archives(dl_manager, (TRAIN_TAR, VAL_TAR), missing_archives_error)
    labels_path = self._validation_labels_path or default_validation_labels_path()
    return {
        "train": self._generate_examples(manual_dir / TRAIN_TAR, None),
        "validation": self._generate_examples(manual_dir / VAL_TAR, read_validation_labels(labels_path)),
    }

  def _generate_examples(self, path: pathlib.Path, validation_labels: list[str] | None):
    if validation_labels is None:
      return self._generate_train(path)
    return self._generate_validation(path, validation_labels)

  def _generate_train(self, path: pathlib.Path) -> Iterator[tuple[str, dict]]:
    found = set()
    with tarfile.open(path, mode="r:") as outer:  # seekable: unwanted classes are skipped, not read
      for name, member in _iter_files(outer):
        wnid = name[:-4] if name.endswith(".tar") else None
        if wnid not in _WNID_SET:
          continue
        found.add(wnid)
        with tarfile.open(fileobj=outer.extractfile(member), mode="r:") as inner:
          for file_name, image in _iter_files(inner):
            data = normalize_jpeg(inner.extractfile(image).read())
            yield file_name, {"image": data, "label": wnid, "file_name": file_name}
    if missing := sorted(_WNID_SET - found):
      log.warning("%s lacks %d of the 100 class tars (e.g. %s)", path, len(missing), missing[:3])

  def _generate_validation(self, path: pathlib.Path, labels: list[str]) -> Iterator[tuple[str, dict]]:
    with tarfile.open(path, mode="r:") as tar:
      for file_name, member in _iter_files(tar):
        wnid = validation_wnid(file_name, labels)
        if wnid in _WNID_SET:
          data = normalize_jpeg(tar.extractfile(member).read())
          yield file_name, {"image": data, "label": wnid, "file_name": file_name}


assert len(CLASS_NAMES) == 100 and len(set(CLASS_NAMES)) == 100, "paper.md lists 100 distinct WNIDs"
