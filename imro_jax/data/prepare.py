"""Command line: build a dataset as TFDS array_record, offline and without TensorFlow.

  python -m imro_jax.data.prepare --dataset imro_synth --builder_config small --data_dir DIR
  python -m imro_jax.data.prepare --dataset handwritten --data_dir DIR   # split_0 .. split_9
  python -m imro_jax.data.prepare --dataset cmu_mosei --data_dir DIR --manual_dir DIR_WITH_PKL

Prints each built config with its split sizes and location.
"""

from __future__ import annotations

import argparse
import sys

from imro_jax.data import datasets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(datasets.DATASETS))
    parser.add_argument("--data_dir", default="", help="TFDS data dir (default: TFDS default)")
    parser.add_argument("--builder_config", default="", help="builder config (default: the dataset's)")
    parser.add_argument("--manual_dir", default="", help="dir with manually downloaded source files")
    parser.add_argument(
        "--num_resplits", type=int, default=-1, help="handwritten: build split_0..split_{k-1} (default 10)"
    )
    return parser.parse_args(argv)


def configs_to_build(args: argparse.Namespace) -> list:
    """Data configs named by the command-line arguments."""
    overrides = {"data_dir": args.data_dir}
    if args.builder_config:
        overrides["builder_config"] = args.builder_config
    if args.manual_dir:
        overrides["manual_dir"] = args.manual_dir
    if args.num_resplits >= 0:
        overrides["num_resplits"] = args.num_resplits
    config = datasets.default_data_config(args.dataset, **overrides)
    if args.dataset == "handwritten" and not args.builder_config:
        return datasets.resplit_configs(config)
    return [config]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for config in configs_to_build(args):
        builder = datasets.prepare_dataset(config)
        sizes = {name: split.num_examples for name, split in builder.info.splits.items()}
        print(f"{config.name}/{config.builder_config}: {sizes} in {builder.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
