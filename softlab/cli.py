"""The `softlab` command line.

  softlab list                                   every registered name
  softlab train CONFIG[:ARG] --workdir DIR [--config.a.b=value ...] [--multihost]
  softlab ablate STUDY [--scale=F] [--force] [--workers=N] | softlab ablate --list

`train` and `ablate` load configs the same way (softlab.config: load_config,
then dotted overrides). Mistakes a user can make (an unknown name, a missing or
mistyped field, a workdir holding another config, in use by another run or that
cannot be written, a missing or damaged file) print one line and exit 2. A run
stopped by a non-finite loss or state prints one line and exits 3 (`ablate`:
after the study's other runs finish); one whose checkpoint or metrics cannot be
written (full disk, read-only folder) prints one line and exits 1; SIGTERM or
Ctrl-C saves the step in flight, prints one line and exits 128 + the signal
(`ablate`: its runs stop, one line, exit 130).
"""

import argparse
import importlib
import signal
import sys
import textwrap

from softlab import registry

# Modules whose import fills the registries `softlab list` prints.
REGISTRY_MODULES = ("softlab.normalizers", "softlab.losses", "softlab.optim", "softlab.data",
                    "softlab.models", "softlab.trainers", "softlab.evaluators")


def fail(message: str, code: int = 2):
  """Prints `softlab: message` on stderr and exits with `code`."""
  print(f"softlab: {message}", file=sys.stderr)
  sys.exit(code)


class Parser(argparse.ArgumentParser):
  """argparse whose usage errors are one line."""

  def error(self, message):
    command = self.prog.removeprefix("softlab").strip()
    fail(f"{command}: {message}" if command else message)


def list_registered() -> str:
  """Every registered name, grouped by kind, one wrapped paragraph per kind."""
  for module in REGISTRY_MODULES:
    importlib.import_module(module)
  blocks = []
  for entries in registry.all_registries().values():
    names = ", ".join(entries.listing())
    blocks.append(
        f"{entries.plural} ({len(entries.names())}):\n"
        + textwrap.fill(names, width=79, initial_indent="  ", subsequent_indent="  ")
    )
  return "\n".join(blocks)


def command_list(args) -> None:
  print(list_registered())


def config_from_command_line(spec: str, overrides: list[str]):
  """The config file `spec` (path[:arg]) with `--config.a.b=value` overrides applied."""
  from softlab.config import load_config, override, parse_value

  config = load_config(spec)
  updates = {}
  for item in overrides:
    path, equals, text = item.removeprefix("--config.").partition("=")
    if not equals or not path:
      fail(f"override {item}: write --config.section.field=value")
    updates[path] = parse_value(config, path, text)
  return override(config, updates)


def command_train(args) -> None:
  if not args.workdir:
    fail("train needs --workdir DIR")
  try:
    config = config_from_command_line(args.config, args.overrides)
  except ValueError as error:
    fail(str(error))
  from softlab.trainers import loop  # the heavy imports, only when training
  from softlab.trainers.checkpoints import CheckpointWriteError

  distributed = None
  if args.multihost:
    distributed = {"coordinator_address": args.coordinator_address,
                   "num_processes": args.num_processes, "process_id": args.process_id}
  try:
    summary = loop.train(config, args.workdir, distributed=distributed)
  except CheckpointWriteError as error:
    fail(str(error), code=1)
  except ValueError as error:  # ConfigError, and FileError for a damaged or locked workdir
    fail(str(error))
  except FloatingPointError as error:
    fail(str(error), code=3)
  except loop.Interrupted as error:
    fail(str(error), code=128 + error.signum)
  except KeyboardInterrupt:
    fail("interrupted; rerun the same command to resume from the last checkpoint",
         code=128 + signal.SIGINT)
  except OSError as error:  # a full disk or a folder that became read-only
    fail(f"{error.filename or args.workdir}: {error.strerror or error}; the run stopped, its"
         " checkpoints are kept", code=1)
  print(loop.main_summary_line(summary))


def command_ablate(args) -> None:
  from softlab import study

  if args.list:
    for path, title in study.list_studies():
      print(f"{path}: {title}")
    return
  if args.study is None:
    fail("ablate needs one study file (or --list)")
  if args.scale <= 0:
    fail(f"--scale must be > 0, got {args.scale}")
  try:
    study.run_study(args.study, force=args.force, scale=args.scale, workers=args.workers)
  except ValueError as error:
    fail(str(error))
  except FloatingPointError as error:
    fail(str(error), code=3)
  except KeyboardInterrupt:
    fail("ablate interrupted; its finished runs are kept and the next ablate resumes the others",
         code=130)


def make_parser() -> Parser:
  parser = Parser(prog="softlab", description="softmax alternatives: registries, training "
                  "runs from config files, paper ablation studies.")
  commands = parser.add_subparsers(dest="command", metavar="COMMAND")
  listing = commands.add_parser("list", help="print every registered name, by kind")
  listing.set_defaults(run=command_list)
  train = commands.add_parser(
      "train", help="train one config (resumes from the workdir's checkpoints)",
      usage="softlab train CONFIG[:ARG] --workdir DIR [--config.section.field=value ...]"
            " [--multihost]")
  train.add_argument("config", help="config file (configs/**/*.py), optionally :ARG")
  train.add_argument("--workdir", help="directory for checkpoints, metrics and summary")
  train.add_argument("--multihost", action="store_true",
                     help="call jax.distributed.initialize() first")
  train.add_argument("--coordinator_address",
                     help="multihost: host:port of process 0 (auto-detected on clusters)")
  train.add_argument("--num_processes", type=int, help="multihost: number of processes")
  train.add_argument("--process_id", type=int, help="multihost: this process's index")
  train.set_defaults(run=command_train)
  ablate = commands.add_parser("ablate", help="run a paper ablation study (experiments/*.py)")
  ablate.add_argument("study", nargs="?", help="study file")
  ablate.add_argument("--scale", type=float, default=1.0,
                      help="multiply the study's size (train and schedule steps) by this")
  ablate.add_argument("--force", action="store_true",
                      help="rerun variants whose results already exist")
  ablate.add_argument("--workers", type=int, help="parallel runs (default: CPU count)")
  ablate.add_argument("--list", action="store_true", help="list the studies in experiments/")
  ablate.set_defaults(run=command_ablate)
  return parser


def parse(argv: list[str]) -> argparse.Namespace:
  """Parsed arguments; `--config.*` overrides of train may come anywhere after CONFIG."""
  parser = make_parser()
  if argv and not argv[0].startswith("-") and argv[0] not in ("list", "train", "ablate"):
    fail(f"unknown command {argv[0]!r}; valid: list, train, ablate")
  if argv[:1] == ["train"]:
    overrides = [a for a in argv[1:] if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    args.overrides = overrides
    return args
  return parser.parse_args(argv)


def main(argv: list[str]) -> None:
  from absl import logging

  logging.set_verbosity(logging.WARNING)  # orbax and jax log every checkpoint at INFO
  if not argv:
    fail("no command; valid: list, train, ablate (softlab --help)")
  args = parse(argv)
  args.run(args)


def run() -> None:
  """Console-script entry point."""
  main(sys.argv[1:])
