#!/usr/bin/env python3
"""Opens a review HTML file in headless Chromium and checks what a person would see, offline."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from html.parser import HTMLParser
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing can leave the machine even if the page asked
]
_EXTERNAL_ATTR = re.compile(r"""\b(?:src|href|srcset|poster|data|action|xlink:href)\s*=\s*["']?\s*(?!data:|#|["'])([^"'\s>]+)""", re.I)
_CSS_URL = re.compile(r"url\(\s*['\"]?(?!data:|#)([^)'\"]+)", re.I)

#: Widths the review must read well at: a small laptop and a desktop window.
WIDTHS = (1024, 1400)

#: Measures the rendered page from inside it. Added to a temporary copy only (the review itself has no script);
#: it writes its findings as JSON into <pre id="miner-layout"> for --dump-dom.
LAYOUT_SCRIPT = r"""<script>(function () {
  var doc = document.documentElement, out = {innerWidth: innerWidth, clientWidth: doc.clientWidth,
    scrollWidth: doc.scrollWidth, ranked: null, midword: [], numbers: [], dates: []};
  var t = document.getElementById("ranked");
  if (t) {
    var r = t.getBoundingClientRect(), wrap = t.parentElement;
    out.ranked = {left: r.left, right: r.right, scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth};
  }
  var SEP = /[\/:_.@,=+\-\s]/;
  document.querySelectorAll(".who, .sub, .tag, dl.meta dd, code, summary b").forEach(function (el) {
    var walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT), last = "", lastTop = null, n;
    while ((n = walk.nextNode())) {
      for (var i = 0; i < n.data.length; i++) {
        var ch = n.data[i], range = document.createRange();
        range.setStart(n, i); range.setEnd(n, i + 1);
        var rects = range.getClientRects();
        if (rects.length && !/\s/.test(ch)) {
          var top = rects[0].top;
          if (lastTop !== null && top > lastTop + rects[0].height / 2 && !SEP.test(last) &&
              !(/[a-z]/.test(last) && /[A-Z]/.test(ch)) && out.midword.length < 50) {
            out.midword.push(el.textContent.trim().slice(0, 160) + "  [broken between " + last + " and " + ch + "]");
          }
          lastTop = top;
        }
        last = ch;
      }
    }
  });
  document.querySelectorAll("td.num, .card .n, svg text.num").forEach(function (el) {
    if (/(^|[^\d,.])\d{4,}/.test(el.textContent)) out.numbers.push(el.textContent.trim());
  });
  var visible = document.body.innerText;
  var other = visible.match(/\d{4}-\d\d-\d\dT\d|\b(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* \d{1,4}\b|\b\d{1,2}\/\d{1,2}\/\d{2,4}\b/g);
  out.dates = other ? other.slice(0, 20) : [];
  var pre = document.createElement("pre");
  pre.id = "miner-layout";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();</script>"""
_LAYOUT_OUT = re.compile(r'<pre id="miner-layout">(.*?)</pre>', re.S)


def find_chromium() -> str | None:
    """The Chromium binary (Debian's ``/usr/bin/chromium`` first).

    Returns:
        Its path, or ``None`` when none is installed.
    """
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if not name.startswith("/") else (name if Path(name).exists() else None)
        if found:
            return found
    return None


def static_problems(html: str) -> list[str]:
    """Reasons the HTML is not self-contained: scripts, stylesheets, fonts, or any non-``data:`` reference.

    Args:
        html: the page source.

    Returns:
        One message per problem (empty when the page is self-contained).
    """
    problems = []
    if re.search(r"<script\b", html, re.I):
        problems.append("the page contains <script>")
    if re.search(r"<link\b", html, re.I):
        problems.append("the page links an external resource (<link>)")
    if re.search(r"@import|@font-face", html, re.I):
        problems.append("the CSS imports a stylesheet or a font")
    for m in _EXTERNAL_ATTR.finditer(html):
        target = m.group(1)
        if not target.startswith("#"):
            problems.append(f"the page references {target!r}")
    for m in _CSS_URL.finditer(html):
        problems.append(f"the CSS references url({m.group(1)!r})")
    return problems


class _DomSummary(HTMLParser):
    """Collects what a reader sees: title, headings, ranked rows, charts, collapsible policies."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.headings: list[str] = []
        self.svgs = 0
        self.svg_shapes = 0
        self.figures: list[str] = []
        self.details = 0
        self.ranked_rows = 0
        self.ranked_names: list[str] = []
        self._stack: list[str] = []
        self._in_title = False
        self._svg_depth = 0
        self._heading: list[str] | None = None
        self._in_ranked = False
        self._in_tbody = False
        self._in_who = False
        self._who: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title" and not self._svg_depth and not self.title:
            self._in_title = True
        elif tag in ("h1", "h2"):
            self._heading = []
        elif tag == "svg":
            self.svgs += 1
            self._svg_depth += 1
        elif tag in ("rect", "path", "circle", "line", "polyline"):
            self.svg_shapes += 1
        elif tag == "figure" and a.get("id"):
            self.figures.append(a["id"])
        elif tag == "details":
            self.details += 1
        elif tag == "table" and a.get("id") == "ranked":
            self._in_ranked = True
        elif tag == "tbody" and self._in_ranked:
            self._in_tbody = True
        elif tag == "tr" and self._in_tbody:
            self.ranked_rows += 1
        elif tag == "a" and self._in_tbody and "who" in (a.get("class") or ""):
            self._in_who, self._who = True, []

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag == "svg":
            self._svg_depth = max(0, self._svg_depth - 1)
        elif tag in ("h1", "h2") and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None
        elif tag == "tbody":
            self._in_tbody = False
        elif tag == "table":
            self._in_ranked = False
        elif tag == "a" and self._in_who:
            self._in_who = False
            self.ranked_names.append("".join(self._who).strip())

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._heading is not None:
            self._heading.append(data)
        if self._in_who:
            self._who.append(data)


def summarise_dom(dom: str) -> dict:
    """What a reader sees in the rendered DOM.

    Args:
        dom: the serialised DOM (Chromium ``--dump-dom``).

    Returns:
        A dict with ``title``, ``headings``, ``ranked_rows``, ``ranked_names``, ``svgs``, ``svg_shapes``,
        ``figures`` and ``details``.
    """
    p = _DomSummary()
    p.feed(dom)
    return {"title": p.title.strip(), "headings": p.headings, "ranked_rows": p.ranked_rows,
            "ranked_names": p.ranked_names, "svgs": p.svgs, "svg_shapes": p.svg_shapes, "figures": p.figures,
            "details": p.details}


def png_ink(path: Path) -> float:
    """The fraction of non-near-white pixels of an 8-bit RGB/RGBA PNG (0.0 = blank page).

    Args:
        path: the PNG file.

    Returns:
        A number in [0, 1].
    """
    try:  # fast path when matplotlib (the test extra) is installed; the pure-Python decoder below is the fallback
        import matplotlib.image as mpimg

        px = mpimg.imread(str(path))[::4, ::4, :3]
        return float((px.min(axis=2) < 235 / 255).mean())
    except ImportError:
        pass
    data = path.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG")
    pos, idat, width = 8, [], 0
    height = depth = ctype = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    if depth != 8 or ctype not in (2, 6):
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {ctype})")
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    ink = total = 0
    i = 0
    for _ in range(height):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 0xFF
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        for x in range(0, stride, bpp * 4):  # sample every 4th pixel
            total += 1
            if min(line[x], line[x + 1], line[x + 2]) < 235:
                ink += 1
    return ink / total if total else 0.0


def page_requests(netlog: Path) -> list[str]:
    """URLs the page itself asked the network for (Chromium's own background traffic is excluded).

    Args:
        netlog: a Chromium ``--log-net-log`` JSON file.

    Returns:
        Sorted distinct URLs that are not ``file:``/``data:``/``about:``/``chrome:``.
    """
    try:
        doc = json.loads(netlog.read_text())
    except (OSError, ValueError):
        text = netlog.read_text(errors="replace").rstrip().rstrip(",")
        doc = json.loads(text + ("]}" if not text.endswith("}") else ""))
    types = {v: k for k, v in doc.get("constants", {}).get("logEventTypes", {}).items()}
    urls = set()
    for e in doc.get("events", []):
        p = e.get("params") or {}
        if types.get(e.get("type")) != "URL_REQUEST_START_JOB" or "url" not in p:
            continue
        page_initiated = "file://" in str(p.get("network_isolation_key", "")) or p.get("initiator") in ("null",)
        if page_initiated and not re.match(r"^(file|data|about|chrome|blob):", p["url"]):
            urls.add(p["url"])
    return sorted(urls)


def _layout(dom: str) -> dict:
    """The measurements :data:`LAYOUT_SCRIPT` wrote into the dumped DOM."""
    import html as _html

    m = _LAYOUT_OUT.search(dom)
    if not m:
        raise RuntimeError("the layout script wrote nothing (did the page load?)")
    return json.loads(_html.unescape(m.group(1)))


def check(html_path: Path, screenshot: Path | None = None, chromium: str | None = None,
          widths: tuple[int, ...] = WIDTHS, height: int = 2200, timeout: int = 90) -> dict:
    """Render ``html_path`` in headless Chromium and report what a person would see, at each window width.

    Args:
        html_path: the review HTML file.
        screenshot: where to write the PNG screenshots, one per width: ``review.png`` gives ``review-1024.png``
            and ``review-1400.png`` (temp files when ``None``).
        chromium: the browser binary (found automatically when ``None``).
        widths: window widths in px.
        height: window height in px.
        timeout: seconds per Chromium run.

    Returns:
        A dict: ``static_problems``, the :func:`summarise_dom` fields, ``external_requests``, ``layout`` (per width:
        ``innerWidth``, ``clientWidth`` and ``scrollWidth`` of the page, the ranked table's ``ranked`` box and its
        wrapper's scroll and client widths, ``midword`` names broken inside a word, ``numbers`` without thousands
        separators, ``dates`` in another format than ``YYYY-MM-DD``), ``screenshots`` (per width, when written)
        and ``screenshot_ink`` (the least inked screenshot).

    Raises:
        FileNotFoundError: when no Chromium is installed.
    """
    chromium = chromium or find_chromium()
    if not chromium:
        raise FileNotFoundError("no Chromium found: apt-get install -y chromium")
    html_path = Path(html_path).resolve()
    result: dict = {"static_problems": static_problems(html_path.read_text(encoding="utf-8"))}
    with tempfile.TemporaryDirectory(prefix="miner-chromium-") as tmp:
        tmp = Path(tmp)
        probe = tmp / html_path.name  # the page plus LAYOUT_SCRIPT; the screenshots and net-logs are of the page itself
        probe.write_text(html_path.read_text(encoding="utf-8").replace("</body>", LAYOUT_SCRIPT + "</body>", 1),
                         encoding="utf-8")

        def run(page: Path, extra: list[str], profile: str) -> subprocess.CompletedProcess:
            cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / profile}", *extra, page.as_uri()]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

        result["layout"], result["screenshots"], requests, inks = {}, {}, set(), []
        for width in widths:
            size = f"--window-size={width},{height}"
            dump = run(probe, ["--dump-dom", size], f"d{width}")
            if dump.returncode != 0 or not dump.stdout.strip():
                raise RuntimeError(f"chromium --dump-dom failed ({dump.returncode}): {dump.stderr[-2000:]}")
            if "title" not in result:
                result.update(summarise_dom(dump.stdout))
            result["layout"][str(width)] = _layout(dump.stdout)
            shot = (Path(screenshot).with_name(f"{Path(screenshot).stem}-{width}.png") if screenshot
                    else tmp / f"shot-{width}.png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            netlog = tmp / f"netlog-{width}.json"
            snap = run(html_path, [f"--screenshot={shot.resolve()}", size, f"--log-net-log={netlog}"], f"s{width}")
            if not shot.exists():
                raise RuntimeError(f"chromium --screenshot wrote nothing ({snap.returncode}): {snap.stderr[-2000:]}")
            if screenshot:
                result["screenshots"][str(width)] = str(shot)
            inks.append(png_ink(shot))
            requests.update(page_requests(netlog) if netlog.exists() else [])
        result["external_requests"] = sorted(requests)
        result["screenshot_ink"] = round(min(inks), 4)
    return result


def verdict(result: dict, min_rows: int = 1, min_charts: int = 2, expect: list[str] | None = None) -> list[str]:
    """The failures in a :func:`check` result (empty = the page looks right).

    Args:
        result: from :func:`check`.
        min_rows: at least this many rows in the ranked table.
        min_charts: at least this many ``<svg>`` charts in figures.
        expect: principal names that must appear in the ranked table.

    Returns:
        Failure messages.
    """
    fails = list(result.get("static_problems") or [])
    if "miner review" not in result.get("title", ""):
        fails.append(f"unexpected title {result.get('title')!r}")
    if result.get("ranked_rows", 0) < min_rows:
        fails.append(f"ranked table has {result.get('ranked_rows', 0)} rows, expected >= {min_rows}")
    charts = [f for f in result.get("figures", []) if f.startswith("chart-")]
    if len(charts) < min_charts:
        fails.append(f"{len(charts)} charts shown ({charts}), expected >= {min_charts}")
    if result.get("svg_shapes", 0) < 10:
        fails.append("the charts draw almost nothing")
    if result.get("external_requests"):
        fails.append(f"the page made external requests: {result['external_requests']}")
    if result.get("screenshot_ink", 0) < 0.02:
        fails.append(f"the screenshot is (nearly) blank (ink {result.get('screenshot_ink')})")
    for name in expect or []:
        if not any(name in n for n in result.get("ranked_names", [])):
            fails.append(f"{name!r} is not in the ranked table")
    for width, lay in (result.get("layout") or {}).items():
        if lay["scrollWidth"] > lay["clientWidth"]:
            fails.append(f"at {width} px the page scrolls sideways ({lay['scrollWidth']} px wide)")
        ranked = lay.get("ranked")
        if ranked and (ranked["right"] > lay["clientWidth"] or ranked["scrollWidth"] > ranked["clientWidth"]):
            fails.append(f"at {width} px the ranked table does not fit: it ends at {ranked['right']:.0f} px and needs "
                         f"{ranked['scrollWidth']} px in a {ranked['clientWidth']} px frame")
        for text in lay.get("midword") or []:
            fails.append(f"at {width} px a name breaks inside a word: {text}")
        for text in lay.get("numbers") or []:
            fails.append(f"at {width} px a number has no thousands separator: {text!r}")
        for text in lay.get("dates") or []:
            fails.append(f"at {width} px a date is not YYYY-MM-DD: {text!r}")
    return fails


def main(argv: list[str] | None = None) -> int:
    """Command line: check one HTML file; print a JSON summary.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 when the page looks right, 1 on any failure, 2 when the file or Chromium is missing.
    """
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("html", type=Path, help="the review HTML file")
    ap.add_argument("--screenshot", type=Path, help="write the screenshots here (PNG; -WIDTH is added to the name)")
    ap.add_argument("--chromium", help="browser binary [default: /usr/bin/chromium]")
    ap.add_argument("--width", type=int, action="append", help="window width in px, repeatable [default: 1024 and 1400]")
    ap.add_argument("--height", type=int, default=2200, help="window height in px [default: 2200]")
    ap.add_argument("--min-rows", type=int, default=1)
    ap.add_argument("--min-charts", type=int, default=2)
    ap.add_argument("--expect", action="append", default=[], help="a principal name that must be listed")
    args = ap.parse_args(argv)
    if not args.html.is_file():
        print(f"error: no such file: {args.html}", file=sys.stderr)
        return 2
    try:
        result = check(args.html, args.screenshot, args.chromium, tuple(args.width or WIDTHS), args.height)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fails = verdict(result, args.min_rows, args.min_charts, args.expect)
    result["failures"] = fails
    print(json.dumps(result, indent=2))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
