"""Sphinx extension: the pages generated from softlab itself at build time.

- `api/<module>.rst`: one page per module of the package (autodoc);
- `registries.rst`: one table per registry (`softlab.registry.all_registries()`):
  name (linked to its documentation), kind, defaults, and the docstring's
  first paragraph; defaults are the keyword-only parameters' defaults, and for config
  builders the `options.pop("field", default)` calls in their source;
- `studies/<study>/`: each study's RESULTS.md and plots from experiments/.

Everything is written under `_generated/` in the source directory (git-ignored)
when the builder starts, so additions to the registries, modules or studies
appear without editing the docs.
"""

import ast
import importlib
import inspect
import pathlib
import pkgutil
import re
import shutil
import textwrap

GENERATED = "_generated"
# Google-style section headers that napoleon parses (and the layer's "Normalizer fields").
SECTION = re.compile(r"^\s*(Args|Arguments|Attributes|Example|Examples|Keyword Args|Methods|"
                     r"Note|Notes|Normalizer fields|Raises|References|Returns|See Also|"
                     r"Todo|Warning|Warnings|Yields):\s*$")
# An Args entry's name: "name:", "*args:", "**kwargs:" or "name (type):".
ENTRY = re.compile(r"^(\s*)(\*{0,2}\w+(?: \([^)]*\))?:)(.*)$")


def escape_inline(text: str) -> str:
  """Plain text -> reStructuredText showing it as written: |, * and a word's trailing _
  are not markup (formulas like |x|, a * b, z_y_)."""
  text = text.replace("\\", "\\\\").replace("|", "\\|").replace("*", "\\*")
  return re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)


def plain_text_docstring(lines: list[str]) -> list[str]:
  """A softlab docstring (plain-text formulas, Google-style sections) as valid RST.

  Inline markup characters are escaped, except in an Args entry's name; outside
  the sections, a change of indentation starts a new paragraph (an indented
  formula line becomes an indented block instead of a markup error), except
  a bullet's continuation lines ("- " items), and a line starting with "+ "
  is a formula's continuation, not a bullet.
  """
  out, section_indent, previous_indent, continuation, in_list = [], None, None, None, False
  for line in lines:
    if not line.strip():
      out.append(line)
      previous_indent = continuation = None
      in_list = False
      continue
    indent = len(line) - len(line.lstrip())
    if section_indent is not None and indent <= section_indent and not SECTION.match(line):
      section_indent = None
      out.append("")
      previous_indent = None
    if SECTION.match(line):
      if out and out[-1].strip():
        out.append("")
      section_indent, previous_indent = indent, indent
      out.append(line)
      continue
    if section_indent is not None:
      entry = ENTRY.match(line)
      if entry and indent == section_indent + 2:
        out.append(entry.group(1) + entry.group(2) + escape_inline(entry.group(3)))
      else:
        out.append(escape_inline(line))
      previous_indent = indent
      continue
    if continuation is not None and indent == continuation:
      out.append(escape_inline(line))  # the bullet's text goes on
      continue
    bullet = line.lstrip().startswith("- ")
    if previous_indent is not None and (indent != previous_indent or bullet != in_list):
      out.append("")  # a new paragraph, indented block or list
    in_list = bullet
    text = escape_inline(line)
    if text.lstrip().startswith("+ "):  # a formula's continuation, not a bullet
      text = text.replace("+ ", "\\+ ", 1)
    out.append(text)
    previous_indent = indent
    continuation = indent + 2 if bullet else None
  return out


def process_docstring(app, what, name, obj, options, lines) -> None:
  lines[:] = plain_text_docstring(lines)


def module_names() -> list[str]:
  """softlab and every module below it (not __main__), sorted."""
  import softlab

  names = ["softlab"] + [m.name for m in pkgutil.walk_packages(softlab.__path__, "softlab.")]
  return sorted(name for name in names if not name.endswith("__main__"))


def heading(title: str, char: str = "=") -> str:
  return f"{title}\n{char * len(title)}\n"


def module_page(name: str) -> str:
  return heading(name) + f"\n.. automodule:: {name}\n"


def _literal(node) -> str:
  return ast.unparse(node)


def option_defaults(obj) -> dict[str, str]:
  """field -> default text: keyword-only defaults and `options.pop("field", default)` calls."""
  target = obj.__init__ if inspect.isclass(obj) else obj
  defaults = {}
  try:
    parameters = inspect.signature(target).parameters.values()
  except (TypeError, ValueError):
    parameters = ()
  for parameter in parameters:
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is not inspect._empty:
      defaults[parameter.name] = repr(parameter.default)
  try:
    tree = ast.parse(textwrap.dedent(inspect.getsource(target)))
  except (OSError, TypeError, SyntaxError):
    return defaults
  for node in ast.walk(tree):
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and node.func.attr == "pop" and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "options" and len(node.args) == 2
        and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      defaults.setdefault(node.args[0].value, _literal(node.args[1]))
  return defaults


def summary(obj) -> str:
  doc = inspect.getdoc(obj) or ""
  return doc.split("\n\n")[0].replace("\n", " ").strip()


def reference(name: str, obj) -> str:
  """`name` linked to obj's documentation (plain when it has none)."""
  module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
  if module and qualname and module.startswith("softlab") and "<" not in qualname:
    role = "class" if inspect.isclass(obj) else "func"
    return f":py:{role}:`{name} <{module}.{qualname}>`"
  return f"``{name}``"


def kind_of(registry, name: str) -> str:
  """The entry's kind: a loss's calling convention, a normalizer's attention support."""
  from softlab import attention, normalizers

  if hasattr(registry, "info"):
    return registry.info(name).describe()
  if registry.kind == "normalizer":
    try:
      normalizers.attention_spec(name)
    except ValueError as error:  # "normalizer 'x' <why>, not attention weights; valid: ..."
      why = re.search(r"^normalizer '[^']*' (.*), not attention weights", str(error))
      return "not attention weights" + (f": {why.group(1)}" if why else "")
    paths = "dense, chunked" if name in attention.chunked_normalizers() else "dense"
    return f"attention weights ({paths})"
  return registry.kind


def cell(text: str) -> str:
  return text.replace("\n", " ") or "\\-"



def registry_table(registry) -> str:
  rows = []
  for name in registry.names():
    obj = registry.get(name)
    defaults = ", ".join(f"``{k}={v}``" for k, v in option_defaults(obj).items())
    rows.append((reference(name, obj), escape_inline(kind_of(registry, name)), defaults,
                 escape_inline(summary(obj))))
  lines = [heading(f"{registry.plural.capitalize()} ({len(rows)})", "-"),
           ".. list-table::", "   :header-rows: 1", "   :widths: 16 18 30 36", "",
           "   * - name", "     - kind", "     - defaults", "     - what"]
  for row in rows:
    lines.append(f"   * - {cell(row[0])}")
    lines.extend(f"     - {cell(value)}" for value in row[1:])
  return "\n".join(lines) + "\n"


def registries_page() -> str:
  import softlab.cli  # noqa: F401  (imports every layer, so every registry is filled)
  from softlab.registry import all_registries

  intro = ("Every name a config can use, read from the registries when the site is built "
           "(``softlab list`` prints the same names). Defaults are the keyword arguments' "
           "defaults, and for config builders the fields they read with their defaults.\n")
  tables = [registry_table(registry) for registry in all_registries().values()]
  return heading("Registries") + "\n" + intro + "\n" + "\n".join(tables)


def study_pages(root: pathlib.Path, out: pathlib.Path) -> list[str]:
  """Copies each experiments/<study>/RESULTS.md and its plots; returns the page names."""
  pages = []
  for results in sorted((root / "experiments").glob("*/RESULTS.md")):
    study = results.parent.name
    target = out / "studies" / study
    target.mkdir(parents=True)
    for path in results.parent.iterdir():
      if path.suffix in (".md", ".png"):
        shutil.copy(path, target / path.name)
    pages.append(f"studies/{study}/RESULTS")
  return pages


def toctree(title: str, entries: list[str]) -> str:
  lines = [heading(title), "", ".. toctree::", "   :maxdepth: 1", ""]
  return "\n".join(lines + [f"   {entry}" for entry in entries]) + "\n"


def generate(app) -> None:
  source = pathlib.Path(app.srcdir)
  out = source / GENERATED
  shutil.rmtree(out, ignore_errors=True)
  (out / "api").mkdir(parents=True)
  modules = module_names()
  for name in modules:
    importlib.import_module(name)
    (out / "api" / f"{name}.rst").write_text(module_page(name))
  (out / "api.rst").write_text(toctree("API reference", [f"api/{name}" for name in modules]))
  (out / "registries.rst").write_text(registries_page())
  (out / "studies.rst").write_text(toctree("Studies", study_pages(source.parent, out)))


def setup(app):
  app.connect("builder-inited", generate)
  app.connect("autodoc-process-docstring", process_docstring, priority=100)  # before napoleon
  return {"parallel_read_safe": True, "version": "1"}
