"""docs/_ext/softlab_pages.py: plain-text docstrings to RST, registry defaults (no Sphinx needed;
.ci/run builds the site with warnings as errors and checks it in Chromium)."""

import importlib.util
import pathlib

from softlab import losses, models, normalizers

_PATH = pathlib.Path(__file__).resolve().parent.parent / "docs" / "_ext" / "softlab_pages.py"
_SPEC = importlib.util.spec_from_file_location("softlab_pages", _PATH)
pages = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pages)

DOCSTRING = """Dice loss: |x - y| / (|x| + |y|), a * b, z_y_ and name_.

Every loss:
- `labels` are integer class indices, except
  where the name says otherwise.
- `where` is a mask.
After the list, a formula:
  g_perp = g - (w.g) w
  + the rest
Back to text.

Args:
  **kwargs: |x| fields.
  x: scores, continued
    on a second line.

References:
  Someone, "A paper", arXiv:1234.56789.""".splitlines()


def test_plain_text_docstrings_become_rst_that_shows_them_as_written():
  got = pages.plain_text_docstring(DOCSTRING)
  assert got[0] == r"Dice loss: \|x - y\| / (\|x\| + \|y\|), a \* b, z_y\_ and name\_."
  # A list after a paragraph line, its continuation kept, a blank line after it.
  i = got.index("- `labels` are integer class indices, except")
  assert got[i - 1] == "" and got[i + 1] == "  where the name says otherwise."
  assert got[i + 2] == "- `where` is a mask." and got[i + 3] == ""
  # An indented formula is its own block; its "+" line is no bullet.
  j = got.index("  g_perp = g - (w.g) w")
  assert got[j - 1] == "" and got[j + 1] == r"  \+ the rest" and got[j + 2] == ""
  # Args entries keep their names (napoleon reads them), their text is escaped.
  assert "  **kwargs: \\|x\\| fields." in got
  assert got[got.index("  x: scores, continued") + 1] == "    on a second line."
  assert got[got.index("References:") - 1] == ""


def test_registry_tables_name_every_entry_with_its_kind_and_defaults():
  page = pages.registries_page()
  for name in (*losses.names(), *normalizers.names(), *models.names()):
    assert f"`{name} <" in page or f"``{name}``" in page, name
  assert pages.kind_of(losses.REGISTRY, "stablemax_cross_entropy") == "classification"
  assert pages.kind_of(normalizers._REGISTRY, "log_softmax") == (
      "not attention weights: returns log-weights")
  assert pages.kind_of(normalizers._REGISTRY, "ssmax") == "attention weights (dense, chunked)"
  # Builders' defaults come from their options.pop("field", default) calls.
  defaults = pages.option_defaults(models.get("transformer"))
  assert defaults["d_model"] == "128" and defaults["positions"] == "'rope'"
  assert pages.option_defaults(normalizers.get("ssmax")) == {"s": "0.43", "n": "None"}
