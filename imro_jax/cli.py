"""The `imro` command line.

    imro train --config trimodal --workdir runs/tri [--config.key=value ...]
    imro train ... --start_over                  (archive the run in --workdir, train from scratch)
    imro eval  --workdir runs/tri [--split test] [--step N] [--config.key=value ...]

`--config` is a shipped config's name (`imro_jax.configs`) or the path of a config file.

`train` starts a run or resumes the one in `--workdir` from its newest good checkpoint (with
the same config: `imro_jax.train.workdir`); `--start_over` archives a run there first. `eval`
evaluates the best (by `checkpoint.best_metric`) or newest checkpoint, or `--step`, with the
run's own `config.json` (`--config` is only needed for a workdir without one). Any config key
can be overridden with `--config.section.key=value`.

Exit status: 0 done; 2 with one line `imro: error: ...` for every problem found before or during
a run that a rerun would hit again (unknown key, bad value, a mesh that does not fit the devices,
a config that differs from the run's, a workdir in use, unusable checkpoints, invalid training
data, too many skipped steps); 128 + N after signal N (143 SIGTERM, 130 SIGINT) once the current
step is saved: rerun the same command to resume.
"""

import argparse
import sys
from collections.abc import Callable

from imro_jax import configs
from imro_jax.train import validate, workdir
from imro_jax.train.config import ConfigError, apply_override, load_config, parse_override

OVERRIDES_HELP = """config overrides (repeatable, after the other arguments or among them):
  --config.section.key=value   set any key of the config, parsed to the key's type, e.g.
                               --config.data.builder_config=small --config.train.num_steps=50
                               --config.optimizer.learning_rate=3e-4 --config.mesh.model=2
  an unknown key or a value of the wrong type is a one-line error (exit status 2); the keys
  and their meaning are in the config file (imro_jax/configs/trimodal.py documents every one)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imro",
        description="Train and evaluate IMRO models.",
        epilog=OVERRIDES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("train", "train or resume a run"), ("eval", "evaluate a checkpoint")):
        sub = commands.add_parser(name, help=help_text, epilog=OVERRIDES_HELP, allow_abbrev=False,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--config", required=name == "train",
                         help=f"a shipped config ({', '.join(configs.names())}) or a config file"
                              + (" (default: the run's config.json)" if name == "eval" else ""))
        sub.add_argument("--workdir", required=True, help="run directory (checkpoints, logs)")
        if name == "train":
            sub.add_argument("--start_over", action="store_true",
                             help="archive a run in --workdir (to previous/) and train from scratch")
        if name == "eval":
            sub.add_argument("--split", default="test", help="split to evaluate (default test)")
            sub.add_argument("--step", type=int, default=None, help="checkpoint (default best)")
    return parser


def _split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.key=value` overrides from the other arguments."""
    overrides = [arg for arg in argv if arg.startswith("--config.")]
    return [arg for arg in argv if not arg.startswith("--config.")], overrides


def _eval_config(args, overrides: list[str]):
    """The run's `config.json` with `overrides` on top; the `--config` file if there is none."""
    saved = workdir.saved_config(args.workdir)
    if saved is None:
        if args.config is None:
            raise ConfigError(f"{args.workdir} has no config.json; pass --config")
        return load_config(configs.path(args.config), overrides)
    if args.config is not None:
        print(f"imro: using the run's {args.workdir}/config.json (overrides on top); "
              f"--config {args.config} is not read", file=sys.stderr)
    config = workdir.config_from_json(saved)
    for text in overrides:
        apply_override(config, *parse_override(text))
    config.lock()
    return config


def run(argv: list[str]) -> dict:
    """Parses `argv` and runs the command; returns its final metrics."""
    args_list, overrides = _split_overrides(argv)
    args = _parser().parse_args(args_list)
    if args.command == "train":
        config = load_config(configs.path(args.config), overrides)
    else:
        config = _eval_config(args, overrides)
    validate.validate_train_config(config)
    validate.validate_model_data(config)

    # Everything below may touch JAX: join the multi-process job first.
    import jax

    from imro_jax.train import distributed, loop

    distributed.initialize(config.mesh)
    validate.validate_layout(config, jax.device_count(), jax.process_count())
    from imro_jax.train.model_task import model_task

    task = model_task(config)  # prepares the dataset if it is missing
    split = config.train.eval_split if args.command == "train" else args.split
    if args.command == "eval" or config.train.eval_every:
        key = "config key 'train.eval_split'" if args.command == "train" else "--split"
        validate.validate_split(config, split, key)
    if args.command == "train":
        return loop.train(config, args.workdir, task, start_over=args.start_over)
    metrics = loop.evaluate_checkpoint(config, args.workdir, task, args.split, args.step)
    if jax.process_index() == 0:
        print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in sorted(metrics.items())))
    return metrics


def exit_status(command: Callable[[], object]) -> int:
    """Runs `command`; returns the documented exit status, printing one line on failure."""
    from imro_jax.train.checkpoint import CheckpointError
    from imro_jax.train.guard import TrainingError
    from imro_jax.train.mesh import MeshError
    from imro_jax.train.preemption import Preempted

    try:
        command()
    except Preempted as stop:
        print(f"imro: {stop}", file=sys.stderr)
        return stop.exit_status
    except (ConfigError, MeshError, CheckpointError, workdir.WorkdirError, TrainingError) as error:
        print(f"imro: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point (`imro`)."""
    return exit_status(lambda: run(sys.argv[1:] if argv is None else list(argv)))


if __name__ == "__main__":
    sys.exit(main())
