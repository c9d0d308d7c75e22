"""A drift report as one self-contained HTML page: a table of the methods and inline SVG charts
(each method's value against its threshold, and each length's histograms, baseline beside
current). No script, no stylesheet or font from the network: it opens offline.

:func:`report_figures` gives the charts alone; with ``classes=True`` they carry no colour of
their own but a class per kind (``drift-base``, ``drift-current``, ``drift-flagged``,
``drift-threshold``) for a page's stylesheet to paint: the web UI, whose Content-Security-Policy
allows no inline style."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["report_figures", "report_html"]

W, H, PAD = 420, 160, 24
BASE, CUR, BAD = "#6b7c93", "#2b7bd6", "#d64545"
SVG_NS = "http://www.w3.org/2000/svg"  # a name, never fetched
_COLOURS = {"base": BASE, "current": CUR, "flagged": BAD, "threshold": "#000"}


def _paint(kind: str, classes: bool, attribute: str = "fill") -> str:
    """How a shape of ``kind`` is painted: its colour, or a class for a stylesheet."""
    return f'class="drift-{kind}"' if classes else f'{attribute}="{_COLOURS[kind]}"'


def _bars(hist: dict[str, list[float]], title: str, classes: bool = False) -> str:
    """Two histograms (shares per bin) side by side in each bin."""
    base, cur, edges = hist["baseline"], hist["current"], hist["edges"]
    top = max([*base, *cur, 1e-9])
    step = (W - 2 * PAD) / max(len(base), 1)
    rects = []
    for i, (b, c) in enumerate(zip(base, cur, strict=True)):
        for j, (v, kind) in enumerate(((b, "base"), (c, "current"))):
            h = (H - 2 * PAD) * v / top
            x = PAD + i * step + j * step / 2
            rects.append(f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{step / 2 - 1:.1f}"'
                         f' height="{h:.1f}" {_paint(kind, classes)}/>')  # fmt: skip
    low = f'<text x="{PAD}" y="{H - 6}" font-size="10">{edges[0]:.0f}</text>'
    high = f'<text x="{W - PAD}" y="{H - 6}" font-size="10" text-anchor="end">{edges[-1]:.0f}'
    axis = low + high + "</text>"
    return _svg(title, "".join(rects) + axis)


def _methods(methods: list[dict[str, Any]], classes: bool = False) -> str:
    """Each method's value as a bar, its threshold as a tick; red when flagged."""
    rows = []
    for i, m in enumerate(methods):
        y = PAD + i * 22
        scale = max(float(m["value"]), float(m["threshold"]), 1e-9) * 1.1
        width = (W - 160) * float(m["value"]) / scale
        tick = 150 + (W - 160) * float(m["threshold"]) / scale
        kind = "flagged" if m["flagged"] else "current"
        rows.append(
            f'<text x="4" y="{y + 12}" font-size="11">{escape(m["name"])}</text>'
            f'<rect x="150" y="{y}" width="{width:.1f}" height="14" {_paint(kind, classes)}/>'
            f'<line x1="{tick:.1f}" x2="{tick:.1f}" y1="{y - 2}" y2="{y + 16}"'
            f" {_paint('threshold', classes, 'stroke')}/>"
        )
    return _svg("value (bar) against threshold (line)", "".join(rows), height=PAD + 22 * len(rows))


def _svg(title: str, body: str, *, height: int = H) -> str:
    svg = f'<svg xmlns="{SVG_NS}" width="{W}" height="{height}" viewBox="0 0 {W} {height}">'
    return f"<figure><figcaption>{escape(title)}</figcaption>{svg}{body}</svg></figure>"


def report_figures(report: dict[str, Any], *, classes: bool = False) -> str:
    """The charts of a report (``GET /v1/drift``'s answer): the methods, then each length's
    histograms; painted by class rather than colour with ``classes``."""
    charts = report.get("charts") or {}
    figures = _methods(report["methods"], classes) if report["methods"] else ""
    figures += "".join(_bars(charts[k], f"{k}: baseline (grey) and current (blue)", classes)
                       for k in ("prompt_chars", "output_chars") if k in charts)  # fmt: skip
    return figures


def report_html(report: dict[str, Any]) -> str:
    """The page of a report as ``GET /v1/drift`` answers it."""
    rows = "".join(
        f"<tr><td>{escape(m['name'])}</td><td>{m['value']:.4g}</td><td>{m['threshold']:.4g}</td>"
        f"<td>{'DRIFT' if m['flagged'] else 'ok'}</td></tr>"
        for m in report["methods"]
    )
    figures = report_figures(report)
    b, c = report["baseline"], report["current"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>drift: {escape(report["model"])}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
figure{{display:inline-block;margin:1em}}</style></head><body>
<h1>Drift of {escape(report["model"])}: {escape(report["verdict"])}</h1>
<p>Embeddings by {escape(report["embed_model"])}; baseline {b["samples"]} samples, current
{c["samples"]} samples.</p>
<table><tr><th>method</th><th>value</th><th>threshold</th><th></th></tr>{rows}</table>
{figures}
</body></html>
"""
