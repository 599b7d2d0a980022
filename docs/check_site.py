"""Checks the built documentation site in headless Chromium.

Opens the index and a loss page as rendered by the browser (`--dump-dom`, the
document after its scripts ran) and checks that
- the index links the tutorial, the registries, the API reference and the studies;
- the loss page documents `stablemax_cross_entropy` with its formula (the
  docstring's first line after "name: "), as written;
- the registries page names every registered loss and normalizer.
With --screenshots DIR it also saves PNGs of the index and of the loss page.

Usage: python docs/check_site.py [SITE_DIR] [--screenshots DIR]
(SITE_DIR defaults to docs/_build/html; needs `chromium` on the PATH.)
"""

import argparse
import html
import inspect
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from softlab import losses, normalizers

LOSS_PAGE = "_generated/api/softlab.losses.classification.html"
LOSS = losses.stablemax_cross_entropy
CHROMIUM = ("chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars")


def formula(fn) -> str:
  """The formula of a docstring's first line: "Name: formula." -> "formula."."""
  first = inspect.getdoc(fn).splitlines()[0]
  return first.split(": ", 1)[1]


def rendered_text(url: str) -> tuple[str, str]:
  """(the DOM as Chromium rendered it, its visible text with whitespace collapsed)."""
  dom = subprocess.run([*CHROMIUM, "--virtual-time-budget=3000", "--dump-dom", url],
                       capture_output=True, text=True, timeout=120, check=True).stdout
  body = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL)
  text = html.unescape(re.sub(r"<[^>]+>", " ", body))
  return dom, re.sub(r"\s+", " ", text)


def screenshot(url: str, path: pathlib.Path) -> None:
  """A 1280 x 1400 PNG of `url`; shown in a frame, which (unlike a headless window)
  scrolls to the URL's #fragment."""
  with tempfile.TemporaryDirectory() as folder:
    frame = pathlib.Path(folder) / "frame.html"
    frame.write_text("<html><body style='margin:0'><iframe src='" + html.escape(url) +
                     "' style='width:1280px;height:1400px;border:0'></iframe></body></html>")
    subprocess.run([*CHROMIUM, "--window-size=1280,1400", "--virtual-time-budget=3000",
                    "--run-all-compositor-stages-before-draw", f"--screenshot={path}",
                    frame.as_uri()], capture_output=True, timeout=120, check=True)
  if not path.exists() or path.stat().st_size < 20_000:  # a blank page is about 8 kB
    raise SystemExit(f"no screenshot of {url} at {path}")


def check(site: pathlib.Path, screenshots: pathlib.Path | None) -> list[str]:
  """The failed checks' descriptions (empty when all pass)."""
  failures = []
  index = (site / "index.html").as_uri()
  dom, text = rendered_text(index)
  for page in ("tutorial.html", "_generated/registries.html", "_generated/api.html",
               "_generated/studies.html"):
    if f'href="{page}"' not in dom:
      failures.append(f"index: no link to {page}")
  anchor = f"{LOSS.__module__}.{LOSS.__name__}"
  loss_url = (site / LOSS_PAGE).as_uri()
  dom, text = rendered_text(loss_url)
  if f'id="{anchor}"' not in dom:
    failures.append(f"{LOSS_PAGE}: no entry {anchor}")
  if formula(LOSS) not in text:
    failures.append(f"{LOSS_PAGE}: formula {formula(LOSS)!r} not in the rendered page")
  _, text = rendered_text((site / "_generated/registries.html").as_uri())
  missing = [name for name in (*losses.names(), *normalizers.names()) if name not in text]
  if missing:
    failures.append(f"registries: missing {', '.join(missing)}")
  if screenshots is not None:
    screenshots.mkdir(parents=True, exist_ok=True)
    screenshot(index, screenshots / "index.png")
    screenshot(f"{loss_url}#{anchor}", screenshots / "loss_page.png")
  return failures


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("site", nargs="?", default="docs/_build/html", type=pathlib.Path)
  parser.add_argument("--screenshots", type=pathlib.Path, default=None)
  args = parser.parse_args()
  if shutil.which("chromium") is None:
    raise SystemExit("chromium is not on the PATH (Debian: apt-get install -y chromium)")
  if not (args.site / "index.html").exists():
    raise SystemExit(f"no built site at {args.site} (python -m sphinx -W -b html docs {args.site})")
  failures = check(args.site.resolve(), args.screenshots)
  for failure in failures:
    print("FAILED", failure)
  if failures:
    sys.exit(1)
  print(f"site check passed: index links, {LOSS.__name__}'s formula on {LOSS_PAGE}, "
        "every loss and normalizer in the registries")


if __name__ == "__main__":
  main()
