"""The `softlab` command line: `softlab list` (more commands join as they land)."""

import importlib
import sys
import textwrap

from absl import app

from softlab import registry

# Modules whose import fills the registries `softlab list` prints.
REGISTRY_MODULES = ("softlab.normalizers", "softlab.losses")

USAGE = "usage: softlab list"


def list_registered() -> str:
  """Every registered name, grouped by kind, one wrapped paragraph per kind."""
  for module in REGISTRY_MODULES:
    importlib.import_module(module)
  blocks = []
  for entries in registry.all_registries().values():
    names = ", ".join(entries.names())
    blocks.append(
        f"{entries.plural} ({len(entries.names())}):\n"
        + textwrap.fill(names, width=79, initial_indent="  ",
                        subsequent_indent="  ")
    )
  return "\n".join(blocks)


COMMANDS = {"list": lambda args: print(list_registered())}


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    given = repr(argv[1]) if len(argv) > 1 else "none"
    sys.exit(
        f"softlab: unknown command {given}; valid: {', '.join(COMMANDS)}\n"
        + USAGE
    )
  COMMANDS[argv[1]](argv[2:])


def run() -> None:
  """Console-script entry point."""
  app.run(main)
