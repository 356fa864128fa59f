"""A few SVG primitives for the generated pictures: boxes, text, arrows and a sequence diagram.
Plain SVG text, so the pictures build anywhere Sphinx does (no Graphviz, no JavaScript)."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape

FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"
ARROW_DEF = ("<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='7' "
             "markerHeight='7' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' "
             "fill='#333'/></marker></defs>")


def document(width: int, height: int, body: list[str], title: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' {FONT} font-size='12'>"
            f"<title>{escape(title)}</title>{ARROW_DEF}"
            f"<rect width='{width}' height='{height}' fill='white'/>"
            + "".join(body) + "</svg>\n")


def rect(x: float, y: float, w: float, h: float, fill: str, stroke: str = "#333",
         rx: float = 0) -> str:
    return (f"<rect x='{x:.1f}' y='{y:.1f}' width='{w:.1f}' height='{h:.1f}' rx='{rx}' "
            f"fill='{fill}' stroke='{stroke}'/>")


def text(x: float, y: float, s: str, anchor: str = "start", size: int = 12,
         weight: str = "normal", fill: str = "#111") -> str:
    return (f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' font-size='{size}' "
            f"font-weight='{weight}' fill='{fill}'>{escape(s)}</text>")


def line(x1: float, y1: float, x2: float, y2: float, stroke: str = "#333",
         dash: str = "", arrow: bool = False, width: float = 1.2) -> str:
    extra = f" stroke-dasharray='{dash}'" if dash else ""
    extra += " marker-end='url(#arrow)'" if arrow else ""
    return (f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
            f"stroke='{stroke}' stroke-width='{width}'{extra}/>")


def path(d: str, stroke: str = "#333", arrow: bool = True) -> str:
    marker = " marker-end='url(#arrow)'" if arrow else ""
    return f"<path d='{d}' fill='none' stroke='{stroke}' stroke-width='1.2'{marker}/>"


@dataclass(frozen=True)
class Step:
    """One step of a sequence: an arrow from lane ``src`` to lane ``dst`` (a note when equal)."""

    src: int
    dst: int
    label: str


def sequence(lanes: list[str], steps: list[Step], title: str, width: int = 860) -> str:
    """A sequence diagram: one vertical line per lane, one row per step."""
    top, row, margin = 56, 34, 110
    gap = (width - 2 * margin) / max(1, len(lanes) - 1)
    xs = [margin + i * gap for i in range(len(lanes))]
    height = top + row * (len(steps) + 1)
    body = []
    for x, name in zip(xs, lanes, strict=True):
        body += [rect(x - 95, 10, 190, 28, "#eef3fb", rx=4),
                 text(x, 29, name, "middle", weight="bold"),
                 line(x, 38, x, height - 8, "#999", dash="4 3")]
    for i, s in enumerate(steps):
        body += _step(xs, s, top + row * i + 20, i + 1)
    return document(width, height, body, title)


def _step(xs: list[float], s: Step, y: float, n: int) -> list[str]:
    label = f"{n}. {s.label}"
    if s.src == s.dst:
        x = xs[s.src]
        w = 7.0 * len(label) + 16
        left = min(max(x - w / 2, 4.0), xs[-1] + 100 - w)
        return [rect(left, y - 15, w, 24, "#fff7e0", "#c9a227", rx=3),
                text(left + w / 2, y + 1, label, "middle", size=11)]
    x1, x2 = xs[s.src], xs[s.dst]
    return [line(x1, y + 6, x2, y + 6, arrow=True),
            text((x1 + x2) / 2, y, label, "middle", size=11)]
