#!/usr/bin/env python3
"""Check an `nf report` HTML file in headless Chromium (Debian's chromium + chromium-driver).

    python3 scripts/check_report_in_browser.py REPORT.html OUT_DIR [--expect-charts N] [SVG ...]

Fails (exit 1, one line per problem) unless:
- every <svg>...</svg> in the HTML, and every SVG file given, parses as XML;
- the page loads with no console message of level WARNING or SEVERE (script errors, failed
  loads of anything the page references, console.error);
- every SVG is laid out at a non-zero size, and there are N of them with --expect-charts;
- a screenshot of the first screen is not blank (enough non-white pixels, several colours).

Writes OUT_DIR/page.png (the whole page) and OUT_DIR/first-chart.png (the first figure).
Talks to chromedriver over its HTTP API with the standard library only.
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
import zlib


def parse_svgs(html, files):
    problems = []
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    for i, s in enumerate(svgs):
        try:
            ET.fromstring(s)
        except ET.ParseError as e:
            problems.append(f"inline SVG {i + 1} does not parse: {e}")
    for f in files:
        try:
            root = ET.parse(f).getroot()
            if not root.tag.endswith("svg"):
                problems.append(f"{f}: the root element is {root.tag}, not svg")
        except (ET.ParseError, OSError) as e:
            problems.append(f"{f} does not parse: {e}")
    return len(svgs), problems


def png_pixels(data):
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into (width, height, rows)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            if depth != 8 or color not in (2, 6):
                raise ValueError(f"unsupported PNG (depth {depth}, colour type {color})")
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def blank_problem(png):
    w, h, bpp, rows = png_pixels(png)
    ink, colours = 0, set()
    for row in rows:
        for x in range(0, w * bpp, bpp * 2):  # every other pixel is plenty
            px = row[x : x + 3]
            if px != b"\xff\xff\xff":
                ink += 1
                if len(colours) < 64:
                    colours.add(px)
    share = ink / max(1, (w * h) // 2)
    if share < 0.01 or len(colours) < 8:
        return f"the screenshot looks blank ({w}x{h}: {100 * share:.2f}% non-white, {len(colours)} colours)"
    return None


class Driver:
    def __init__(self, binary):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.proc = subprocess.Popen(
            [binary, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(200):
            try:
                self.call("GET", "/status")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("chromedriver did not start")

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)["value"]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def browser_check(html_path, out_dir, chromium, chromedriver):
    problems = []
    drv = Driver(chromedriver)
    try:
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:loggingPrefs": {"browser": "ALL"},
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--hide-scrollbars",
                            "--window-size=1280,900",
                        ],
                    },
                }
            }
        }
        sid = drv.call("POST", "/session", caps)["sessionId"]
        s = f"/session/{sid}"
        drv.call("POST", f"{s}/url", {"url": "file://" + os.path.abspath(html_path)})
        for entry in drv.call("POST", f"{s}/se/log", {"type": "browser"}):
            if entry.get("level") in ("SEVERE", "WARNING"):
                problems.append(f"console {entry['level']}: {entry.get('message')}")
        sizes = drv.call(
            "POST",
            f"{s}/execute/sync",
            {
                "script": "return Array.from(document.querySelectorAll('svg'))"
                ".map(e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; });",
                "args": [],
            },
        )
        for i, (w, h) in enumerate(sizes):
            if w <= 0 or h <= 0:
                problems.append(f"SVG {i + 1} is laid out at {w}x{h}")
        # The blank check decodes the first screen (pure Python: the whole page would be slow).
        blank = blank_problem(base64.b64decode(drv.call("GET", f"{s}/screenshot")))
        if blank:
            problems.append(blank)
        height = drv.call(
            "POST",
            f"{s}/execute/sync",
            {"script": "return document.documentElement.scrollHeight;", "args": []},
        )
        drv.call("POST", f"{s}/window/rect", {"width": 1280, "height": min(int(height) + 100, 16000)})
        page = base64.b64decode(drv.call("GET", f"{s}/screenshot"))
        with open(os.path.join(out_dir, "page.png"), "wb") as f:
            f.write(page)
        figures = drv.call("POST", f"{s}/elements", {"using": "css selector", "value": "figure"})
        if figures:
            eid = next(iter(figures[0].values()))
            chart = base64.b64decode(drv.call("GET", f"{s}/element/{eid}/screenshot"))
            with open(os.path.join(out_dir, "first-chart.png"), "wb") as f:
                f.write(chart)
        else:
            problems.append("the page has no figure")
        drv.call("DELETE", s)
    finally:
        drv.close()
    return len(sizes), problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html")
    ap.add_argument("out_dir")
    ap.add_argument("svgs", nargs="*", help="SVG files that must parse too")
    ap.add_argument("--expect-charts", type=int)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    a = ap.parse_args()
    for tool in (a.chromium, a.chromedriver):
        if not os.access(tool, os.X_OK):
            print(f"error: {tool} not found (apt-get install chromium chromium-driver)", file=sys.stderr)
            return 1
    with open(a.html, encoding="utf-8") as f:
        html = f.read()
    n_source, problems = parse_svgs(html, a.svgs)
    n_laid_out, more = browser_check(a.html, a.out_dir, a.chromium, a.chromedriver)
    problems += more
    if a.expect_charts is not None and n_laid_out != a.expect_charts:
        problems.append(f"{n_laid_out} SVGs laid out, {a.expect_charts} expected")
    if n_source != n_laid_out:
        problems.append(f"{n_source} SVGs in the source but {n_laid_out} in the page")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if not problems:
        print(f"ok: {n_laid_out} SVGs parse and render, no console errors, page not blank")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
