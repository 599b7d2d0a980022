"""Registries: every name a config can use maps to one object here.

Each layer owns one registry (normalizers, losses, models, datasets, trainers);
`softlab list` prints them all. Unknown names raise one-line errors naming the
kind and the valid choices, so a typo in a config is caught before any work.
"""

from collections.abc import Callable, Iterator
from typing import Any

_REGISTRIES: dict[str, "Registry"] = {}


class Registry:
  """A name -> object map for one kind of component."""

  def __init__(self, kind: str, plural: str | None = None):
    if kind in _REGISTRIES:
      raise ValueError(f"a registry of {kind!r} already exists")
    self.kind = kind
    self.plural = plural or f"{kind}s"
    self._entries: dict[str, Any] = {}
    _REGISTRIES[kind] = self

  def register(self, name: str) -> Callable[[Any], Any]:
    """Decorator adding the decorated object under `name`."""

    def add(obj):
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = obj
      return obj

    return add

  def unregister(self, name: str) -> None:
    """Removes `name` (for tests that register a temporary entry)."""
    if name not in self._entries:
      raise ValueError(f"{self.kind} {name!r} is not registered")
    del self._entries[name]

  def get(self, name: str) -> Any:
    """The object registered as `name`; ValueError listing valid names otherwise."""
    try:
      return self._entries[name]
    except (KeyError, TypeError):
      raise ValueError(
          f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}"
      ) from None

  def from_config(self, config) -> tuple[Any, dict]:
    """(object named by config.name, the section's other fields as a dict)."""
    options = dict(config)
    if "name" not in options:
      raise ValueError(f"missing field 'name'; valid: {', '.join(self.names())}")
    return self.get(options.pop("name")), options

  def reject_unknown(self, options: dict, name: str) -> None:
    """Raises if `options` holds fields the component `name` does not know."""
    if options:
      raise ValueError(
          f"unknown field(s) for {self.kind} {name!r}: {', '.join(sorted(options))}"
      )

  def names(self) -> tuple[str, ...]:
    """Registered names, sorted."""
    return tuple(sorted(self._entries))

  def listing(self) -> tuple[str, ...]:
    """Registered names as `softlab list` prints them (subclasses add details)."""
    return self.names()

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self.names())


def all_registries() -> dict[str, Registry]:
  """Every registry created so far, by kind, in creation order."""
  return dict(_REGISTRIES)
