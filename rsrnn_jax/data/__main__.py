"""``python -m rsrnn_jax.data --ensure [--source_dir DIR]``: find the Fashion-MNIST idx files (installing
Debian's dataset-fashion-mnist when running as root) and say where they are, or exit 2 with what to do."""
import argparse
import sys

from rsrnn_jax.data.fashion_mnist import find_fashion_mnist


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--ensure", action="store_true", help="find the idx files, installing the package if root")
  parser.add_argument("--source_dir", default=None, help="a folder holding the four idx files")
  args = parser.parse_args(argv)
  try:
    folder = find_fashion_mnist(args.source_dir)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"Fashion-MNIST: {folder}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
