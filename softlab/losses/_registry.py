"""The loss registry: every loss a config can name (`softlab.losses.get(name)`)."""

from softlab.registry import Registry

REGISTRY = Registry("loss", plural="losses")
