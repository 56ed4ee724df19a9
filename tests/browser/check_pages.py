"""Checks HTML pages the way a person sees them: in headless Chromium
(Debian's `chromium`, driven by Playwright), at a desktop and a phone
width. For each page and width it saves a full-page screenshot and
reports, as JSON on stdout:

* ``overflow``: elements that stick out of the viewport horizontally
  (beyond 1 px) and are not inside a box that scrolls or clips them, and
  whether the page itself scrolls sideways;
* ``small_text``: text rendered below the minimum size, in CSS pixels as
  drawn (an SVG's text counts at its scaled size: a 12-unit label in a
  720-unit chart shown 350 px wide is drawn at 5.8 px).

Every ``<details>`` is opened first, so that what a click reveals is
checked too.

Usage: python3 check_pages.py --out DIR [--widths 1280,390] [--min-px 10] PAGE.html...
Exit 0 when it could check (problems or not: the caller judges), 2 when
the browser cannot be started.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

MEASURE = r"""
(minPx) => {
  const vw = document.documentElement.clientWidth;
  const describe = (el) => {
    const text = (el.textContent || "").trim().replace(/\s+/g, " ").slice(0, 60);
    const cls = el.getAttribute("class");
    return `${el.tagName.toLowerCase()}${cls ? "." + cls.split(/\s+/).join(".") : ""}` +
      (text ? ` "${text}"` : "");
  };
  // A box that scrolls or clips its content horizontally contains what
  // overflows it; the box itself must still fit.
  const contained = (el) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (ox === "auto" || ox === "scroll" || ox === "hidden" || ox === "clip") return true;
    }
    return false;
  };
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return false;
    const s = getComputedStyle(el);
    return s.visibility !== "hidden" && s.display !== "none";
  };
  const overflow = [];
  for (const el of document.body.querySelectorAll("*")) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    if ((r.right > vw + 1 || r.left < -1) && !contained(el)) {
      overflow.push({ element: describe(el), left: Math.round(r.left), right: Math.round(r.right) });
    }
  }
  const small = [];
  const seen = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.trim()) continue;
    const el = node.parentElement;
    if (!el || seen.has(el)) continue;
    seen.add(el);
    // Not drawn: tooltips, styles, scripts.
    if (el.closest("title, style, script, noscript")) continue;
    if (!visible(el)) continue;
    let px = parseFloat(getComputedStyle(el).fontSize);
    if (el instanceof SVGElement && el.getScreenCTM) {
      const m = el.getScreenCTM();
      if (m) px *= Math.sqrt(m.a * m.a + m.b * m.b);
    }
    if (px < minPx - 0.05) {
      small.push({ element: describe(el), px: Math.round(px * 10) / 10 });
    }
  }
  return {
    viewport: vw,
    page_scroll_width: document.documentElement.scrollWidth,
    overflow: overflow.slice(0, 20),
    overflow_count: overflow.length,
    small_text: small.slice(0, 20),
    small_text_count: small.length,
  };
}
"""


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--widths", default="1280,390")
    parser.add_argument("--min-px", type=float, default=10.0)
    parser.add_argument("pages", nargs="+")
    args = parser.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    browser_path = os.environ.get("FLUX_CHROMIUM") or chromium()
    if not browser_path:
        print("no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright is not installed (pip install playwright)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(
                executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"]
            )
        except Exception as e:  # the message says what is missing
            print(f"cannot start {browser_path}: {e}", file=sys.stderr)
            return 2
        for page_path in args.pages:
            page_file = Path(page_path).resolve()
            for width in widths:
                page = browser.new_page(
                    viewport={"width": width, "height": 900}, device_scale_factor=1
                )
                page.goto(page_file.as_uri())
                page.wait_for_load_state("load")
                page.evaluate(
                    "() => document.querySelectorAll('details').forEach(d => d.open = true)"
                )
                measured = page.evaluate(MEASURE, args.min_px)
                shot = out / f"{page_file.stem}-{width}.png"
                page.screenshot(path=str(shot), full_page=True)
                measured.update({"page": str(page_file), "width": width, "screenshot": str(shot)})
                results.append(measured)
                page.close()
        browser.close()
    json.dump(results, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
