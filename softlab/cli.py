"""The `softlab` command line.

  softlab list                                   every registered name
  softlab train CONFIG[:ARG] --workdir DIR [--config.a.b=value ...] [--multihost]
  softlab ablate STUDY [--scale=F] [--force] [--workers=N] | softlab ablate --list

Mistakes a user can make (an unknown name, a missing or mistyped field, a
workdir holding another config, a missing file) print one line and exit 2. A
run stopped by a non-finite loss prints one line and exits 3 (`ablate`: after
the study's other runs finish).
"""

import importlib
import os
import sys
import textwrap

from absl import app, flags, logging
from ml_collections import config_flags

from softlab import registry

# Modules whose import fills the registries `softlab list` prints.
REGISTRY_MODULES = ("softlab.normalizers", "softlab.losses", "softlab.optim", "softlab.data",
                    "softlab.models", "softlab.trainers")

USAGE = """usage:
  softlab list
  softlab train CONFIG[:ARG] --workdir DIR [--config.section.key=value ...] [--multihost]
  softlab ablate experiments/STUDY.py [--scale=F] [--force] [--workers=N]
  softlab ablate --list"""

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/**/*.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and summary")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "call jax.distributed.initialize() first")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "multihost: host:port of process 0 (auto-detected on clusters)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "multihost: number of processes")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "multihost: this process's index")
_SCALE = flags.DEFINE_float("scale", 1.0,
                            "ablate: multiply the study's size (train and schedule steps) by this")
_FORCE = flags.DEFINE_bool("force", False, "ablate: rerun variants whose results already exist")
_WORKERS = flags.DEFINE_integer("workers", None, "ablate: parallel runs (default: CPU count)")
_LIST = flags.DEFINE_bool("list", False, "ablate: list the studies in experiments/")


def fail(message: str, code: int = 2):
  """Prints `softlab: message` on stderr and exits with `code`."""
  print(f"softlab: {message}", file=sys.stderr)
  sys.exit(code)


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


def command_list(args: list[str]) -> None:
  if args:
    fail(f"list takes no arguments, got {' '.join(args)}")
  print(list_registered())


def command_train(args: list[str]) -> None:
  if args:
    fail(f"unexpected argument(s) {' '.join(args)}\n{USAGE}")
  if _CONFIG.value is None:
    fail(f"train needs a CONFIG file\n{USAGE}")
  if not _WORKDIR.value:
    fail("train needs --workdir DIR")
  from softlab.trainers import ConfigError, loop  # the heavy imports, only when training

  distributed = None
  if _MULTIHOST.value:
    distributed = {"coordinator_address": _COORDINATOR.value,
                   "num_processes": _NUM_PROCESSES.value, "process_id": _PROCESS_ID.value}
  try:
    summary = loop.train(_CONFIG.value, _WORKDIR.value, distributed=distributed)
  except ConfigError as error:
    fail(str(error))
  except FloatingPointError as error:
    fail(str(error), code=3)
  print(loop.main_summary_line(summary))


def command_ablate(args: list[str]) -> None:
  from softlab import study

  if _LIST.value:
    for path, title in study.list_studies():
      print(f"{path}: {title}")
    return
  if len(args) != 1:
    fail(f"ablate needs one study file\n{USAGE}")
  if _SCALE.value <= 0:
    fail(f"--scale must be > 0, got {_SCALE.value}")
  try:
    study.run_study(args[0], force=_FORCE.value, scale=_SCALE.value, workers=_WORKERS.value)
  except ValueError as error:
    fail(str(error))
  except FloatingPointError as error:
    fail(str(error), code=3)


COMMANDS = {"list": command_list, "train": command_train, "ablate": command_ablate}


def main(argv: list[str]) -> None:
  logging.set_verbosity(logging.WARNING)  # orbax and jax log every checkpoint at INFO
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = repr(argv[1]) if len(argv) > 1 else "none"
    fail(f"unknown command {given}; valid: {', '.join(COMMANDS)}\n{USAGE}")
  COMMANDS[argv[1]](argv[2:])


def positional_config(argv: list[str]) -> list[str]:
  """`softlab train CONFIG ...` -> `softlab train --config=CONFIG ...` for absl."""
  if len(argv) > 2 and argv[1] == "train" and not argv[2].startswith("-"):
    path = argv[2].partition(":")[0]
    if not os.path.isfile(path):
      fail(f"config file not found: {path}")
    return [argv[0], argv[1], f"--config={argv[2]}", *argv[3:]]
  return argv


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors (bad override, unknown field) are one line."""
  try:
    return flags.FLAGS(positional_config(argv))
  except flags.Error as error:
    fail(str(error).splitlines()[0])
  except (AttributeError, KeyError) as error:
    overrides = " ".join(a for a in argv if a.startswith("--config."))
    fail(f"a config override names a field the config does not have: {error} (in {overrides})")


def run() -> None:
  """Console-script entry point."""
  app.run(main, flags_parser=parse_flags)
