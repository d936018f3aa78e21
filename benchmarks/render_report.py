#!/usr/bin/env python3
"""Render an edgekit report.html in headless Chromium and save a screenshot to look at.

Checks that the page loads, that its table has one row per result and that every
embedded plot decoded to a real image (naturalWidth > 0), using Chromium's DOM
dump; then writes a PNG screenshot of the page.

    python benchmarks/render_report.py demo-out/report.html --png report.png
Needs Debian's `chromium` (apt-get install chromium).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Runs inside the page: annotate <body> with what was rendered, so --dump-dom shows it.
PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.dataset.rows = document.querySelectorAll('#results tbody tr').length;
  document.body.dataset.images = imgs.length;
  document.body.dataset.decoded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
</script>"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", type=Path)
    ap.add_argument("--png", type=Path, default=Path("report.png"))
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1600)
    args = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chromium:
        sys.exit("no chromium on PATH: apt-get install chromium")
    html = args.report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        probe_page = Path(tmp) / "probe.html"
        probe_page.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
        profile = ["--user-data-dir=" + str(Path(tmp) / "profile")]
        dom = subprocess.run([chromium, *FLAGS, *profile, "--virtual-time-budget=3000", "--dump-dom",
                              probe_page.as_uri()], capture_output=True, text=True, timeout=120).stdout
        m = re.search(r'<body[^>]*data-rows="(\d+)"[^>]*data-images="(\d+)"[^>]*data-decoded="(\d+)"', dom)
        if not m:
            sys.exit("the page did not finish loading in Chromium")
        rows, images, decoded = map(int, m.groups())
        subprocess.run([chromium, *FLAGS, *profile, f"--window-size={args.width},{args.height}",
                        f"--screenshot={args.png.absolute()}", args.report.absolute().as_uri()],
                       capture_output=True, timeout=120, check=True)
    print(f"rows {rows}, images {decoded}/{images} decoded, screenshot {args.png}")
    if decoded != images or rows == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
