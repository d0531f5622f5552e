#!/usr/bin/env python3
"""Render a report.html in headless Chromium and check that every image is displayed.

    python scripts/render_report.py RUN_DIR/report.html [--screenshot page.png] [--json]

Chromium loads a copy of the page with one inline script added at the end; after the load
event it records, for every <img>, whether it decoded (``complete`` and ``naturalWidth > 0``)
and how large it is laid out. ``--dump-dom`` prints the DOM after load, and the record is read
back from it. Exit 0 when every image is displayed, 1 when one is not, 2 when Chromium is
missing or the page cannot be read. Networking is off in every way Chromium allows, so an
image that needed the network would show up here as not displayed.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECK = """
<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images).map((img, i) => ({
    index: i, alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
    naturalHeight: img.naturalHeight, shownWidth: img.getBoundingClientRect().width,
    shownHeight: img.getBoundingClientRect().height}));
  const out = document.createElement("pre");
  out.id = "normlab-image-check";
  // The markers are built from pieces so this script's own text never matches them.
  out.textContent = ["NORMLAB", "CHECK<<"].join("-") + JSON.stringify({images: images,
    pageHeight: document.documentElement.scrollHeight}) + [">>END", "CHECK"].join("-");
  document.body.appendChild(out);
});
</script>
"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
         # Nothing resolves and nothing connects: the page must stand alone.
         "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium(binary: str, page: Path, extra: list[str], profile: Path, timeout: float) -> subprocess.CompletedProcess:
    command = [binary, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *extra, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check_page(html_path: Path, screenshot: Path | None = None, width: int = 1280, timeout: float = 120) -> dict:
    """Load the page in Chromium; return {"images": [...], "ok": bool, ...}. Raises RuntimeError
    when Chromium is missing or fails."""
    binary = find_chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install -y chromium)")
    text = html_path.read_text(encoding="utf-8")
    if "</body>" not in text:
        raise RuntimeError(f"{html_path} has no </body>")
    with tempfile.TemporaryDirectory(prefix="normlab-render-") as tmp:
        tmp = Path(tmp)
        probe = tmp / "page.html"
        probe.write_text(text.replace("</body>", CHECK + "</body>", 1), encoding="utf-8")
        proc = chromium(binary, probe, ["--dump-dom", f"--window-size={width},900"], tmp / "profile", timeout)
        match = re.search(r"NORMLAB-CHECK<<(.*?)>>END-CHECK", html.unescape(proc.stdout), re.S)
        if proc.returncode != 0 or not match:
            raise RuntimeError(f"chromium did not render {html_path} (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
        record = json.loads(match.group(1))
        if screenshot is not None:
            # The whole page in one picture: a window as tall as the page was laid out.
            height = min(int(record["pageHeight"]) + 40, 16000)
            shot = chromium(binary, html_path.resolve(), [f"--screenshot={screenshot.resolve()}",
                                                          f"--window-size={width},{height}"], tmp / "profile2", timeout)
            if shot.returncode != 0 or not screenshot.exists():
                raise RuntimeError(f"chromium made no screenshot (exit {shot.returncode}): {shot.stderr.strip()[-400:]}")
    images = record["images"]
    record["broken"] = [i for i in images if not (i["complete"] and i["naturalWidth"] > 0 and i["shownWidth"] > 0)]
    record["ok"] = bool(images) and not record["broken"]
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="a report.html")
    parser.add_argument("--screenshot", type=Path, help="also save a full-page screenshot here (PNG)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default 1280)")
    parser.add_argument("--json", action="store_true", help="print the record as JSON")
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"render_report: error: no file {args.html}; pass a report.html", file=sys.stderr)
        return 2
    try:
        record = check_page(args.html, args.screenshot, args.width)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"render_report: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(record, indent=1))
    else:
        for image in record["images"]:
            state = "shown" if image not in record["broken"] else "NOT SHOWN"
            print(f"{state:<9} {image['naturalWidth']}x{image['naturalHeight']} px, laid out "
                  f"{image['shownWidth']:.0f}x{image['shownHeight']:.0f}  {image['alt']}")
        print(f"{len(record['images']) - len(record['broken'])} of {len(record['images'])} images displayed")
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
