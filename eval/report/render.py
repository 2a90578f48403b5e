"""Slides as data, and two renderers that draw the same geometry: python-pptx and matplotlib (PDF).

A Slide holds a title, bullets, at most one table or one image, and a footnote naming where its numbers
come from. `layout()` decides every box and font size once, measuring text with matplotlib's own font
metrics (DejaVu Sans, wider than the Calibri a pptx viewer uses, so what fits in the PDF fits in the
pptx). The PDF needs no office suite: each page is a 16:9 matplotlib figure with tables drawn by hand.

    >>> s = Slide("Results", bullets=["F1 rose."], table=Table(["system", "F1"], [["a", "50.0"]]))
    >>> [b.kind for b in layout(s).boxes]
    ['title', 'bullets', 'table']
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from eval.report.i18n import NOT_MEASURED
from rag.errors import BadInput

W, H = 13.333, 7.5  # slide size in inches (16:9)
MARGIN = 0.5
TITLE_TOP, TITLE_H = 0.3, 0.68
BODY_TOP = 1.3
LINE = 1.22  # line height as a multiple of the font size
MUTED = (*NOT_MEASURED, "–")  # cells drawn in grey: nothing measured (in any edition) / does not apply
FONT = "DejaVu Sans"  # matplotlib ships it, with Latin, Greek and Cyrillic glyphs

NAVY, GREY, ACCENT, ZEBRA = "#1f3b5c", "#777777", "#2e86c1", "#eef2f6"


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    align: str = ""  # one of l/c/r per column; default: first column left, the others centred

    def col_align(self, c: int) -> str:
        return self.align[c] if c < len(self.align) else ("l" if c == 0 else "c")


@dataclass(frozen=True)
class Slide:
    title: str
    bullets: list[str] = field(default_factory=list)  # a leading "  " makes a sub-bullet
    table: Table | None = None
    image: Path | None = None  # a PNG, fitted into the body (right of the bullets when there are any)
    footnote: str = ""  # where the numbers come from
    subtitle: str = ""


# ---------------------------------------------------------------- text measurement
@functools.lru_cache(maxsize=1)
def _renderer():
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(10, 10, 72)  # 72 dpi: one pixel = one point


@functools.lru_cache(maxsize=64)
def _font(size: float, bold: bool = False, italic: bool = False):
    from matplotlib.font_manager import FontProperties

    return FontProperties(
        family=FONT,
        size=size,
        weight="bold" if bold else "normal",
        style="italic" if italic else "normal",
    )


@functools.lru_cache(maxsize=20000)
def text_width(s: str, size: float, bold: bool = False) -> float:
    """Width in inches of one line of text at `size` points."""
    if not s:
        return 0.0
    w, _, _ = _renderer().get_text_width_height_descent(s, _font(size, bold), ismath=False)
    return w / 72


def wrap(text: str, width: float, size: float, bold: bool = False) -> list[str]:
    """Greedy word wrap to `width` inches; an explicit newline starts a new line."""
    lines: list[str] = []
    for para in text.split("\n"):
        cur = ""
        for word in para.split(" "):
            trial = f"{cur} {word}" if cur else word
            if cur and text_width(trial, size, bold) > width:
                lines.append(cur)
                cur = word
            else:
                cur = trial
        lines.append(cur)
    return lines


def line_h(size: float) -> float:
    return size * LINE / 72


# ---------------------------------------------------------------- layout
@dataclass
class Box:
    kind: str  # title | subtitle | bullets | table | image | footnote | number
    x: float
    y: float  # top edge, inches from the top
    w: float
    h: float
    size: float = 12  # font size in points
    lines: list = field(default_factory=list)  # bullets: [(level, [wrapped lines])]; text boxes: [lines]
    cols: list[float] = field(default_factory=list)  # table column widths
    cells: list = field(default_factory=list)  # table: rows of wrapped cells (header first)
    heights: list[float] = field(default_factory=list)  # table row heights


@dataclass
class Layout:
    boxes: list[Box]


def _fit_bullets(
    bullets: Sequence[str], w: float, h: float, sizes=(18, 17, 16, 15, 14, 13, 12, 11, 10, 9)
) -> Box:
    for size in sizes:
        paras = []
        total = 0.0
        for b in bullets:
            level = 1 if b.startswith("  ") else 0
            indent = 0.3 + 0.35 * level
            lines = wrap(b.strip(), w - indent, size)
            paras.append((level, lines))
            total += len(lines) * line_h(size) + 0.35 * size / 72
        if total <= h or size == sizes[-1]:
            return Box("bullets", 0, 0, w, total, size=size, lines=paras)
    raise AssertionError("unreachable")


PAD_X, PAD_Y = 0.06, 0.035


def _widest_word(s: str, size: float, bold: bool = False) -> float:
    return max((text_width(x, size, bold) for x in s.split()), default=0.0)


def _fit_table(t: Table, w: float, h: float, sizes=(13, 12, 11, 10, 9, 8, 7)) -> Box:
    ncol = len(t.header)
    for size in sizes:
        lh = line_h(size)

        mins, nats = [], []
        for c in range(ncol):
            col = [r[c] for r in t.rows]
            mins.append(
                max([_widest_word(t.header[c], size, True)] + [_widest_word(v, size) for v in col])
                + 2 * PAD_X
            )
            nat_cells = [text_width(v, size) for v in col if v not in MUTED]
            nats.append(
                max([text_width(t.header[c], size, True) / 2 + 0.1] + nat_cells + [mins[c] - 2 * PAD_X])
                + 2 * PAD_X
            )
        if sum(mins) > w and size != sizes[-1]:
            continue
        if sum(nats) <= w:
            cols = [n * w / sum(nats) for n in nats]
        else:
            spare = max(0.0, w - sum(mins))
            extra = [n - m for n, m in zip(nats, mins)]
            cols = [m + e * spare / max(sum(extra), 1e-9) for m, e in zip(mins, extra)]
        cells, heights = [], []
        for i, row in enumerate([t.header, *t.rows]):
            wrapped = [wrap(v, cols[c] - 2 * PAD_X, size, bold=i == 0) for c, v in enumerate(row)]
            cells.append(wrapped)
            heights.append(max(len(x) for x in wrapped) * lh + 2 * PAD_Y)
        if sum(heights) <= h or size == sizes[-1]:
            return Box(
                "table", 0, 0, sum(cols), sum(heights), size=size, cols=cols, cells=cells, heights=heights
            )
    raise AssertionError("unreachable")


def layout(s: Slide, number: str = "") -> Layout:
    """Boxes for one slide, in inches from the top-left corner."""
    boxes = []
    title_size = 28
    while text_width(s.title, title_size, True) > W - 2 * MARGIN and title_size > 18:
        title_size -= 1
    boxes.append(Box("title", MARGIN, TITLE_TOP, W - 2 * MARGIN, TITLE_H, size=title_size, lines=[s.title]))
    top = BODY_TOP
    if s.subtitle:
        sub = wrap(s.subtitle, W - 2 * MARGIN, 18)
        boxes.append(
            Box("subtitle", MARGIN, top - 0.15, W - 2 * MARGIN, len(sub) * line_h(18), size=18, lines=sub)
        )
        top += len(sub) * line_h(18) + 0.1
    bottom = H - 0.35
    if s.footnote:
        fl = wrap(s.footnote, W - 2 * MARGIN - 0.8, 9)
        fh = len(fl) * line_h(9)
        boxes.append(Box("footnote", MARGIN, bottom - fh, W - 2 * MARGIN - 0.8, fh, size=9, lines=fl))
        bottom -= fh + 0.12
    if number:
        boxes.append(
            Box("number", W - MARGIN - 0.7, H - 0.35 - line_h(9), 0.7, line_h(9), size=9, lines=[number])
        )
    body_w, body_h = W - 2 * MARGIN, bottom - top
    if s.image is not None:
        aspect = _aspect(s.image)
        if s.bullets and aspect >= 1.9:  # a wide figure goes across the slide, the bullets under it
            ih = min(body_w / aspect, body_h * 0.75)
            boxes.append(Box("image", MARGIN, top, body_w, ih))
            b = _fit_bullets(s.bullets, body_w, body_h - ih - 0.2, sizes=(16, 15, 14, 13, 12, 11, 10, 9))
            b.x, b.y = MARGIN, top + ih + 0.2
            boxes.append(b)
        elif s.bullets:
            bw = 4.3
            b = _fit_bullets(s.bullets, bw, body_h, sizes=(16, 15, 14, 13, 12, 11, 10, 9))
            b.x, b.y = MARGIN, top
            boxes.append(b)
            boxes.append(Box("image", MARGIN + bw + 0.2, top, body_w - bw - 0.2, body_h))
        else:
            boxes.append(Box("image", MARGIN, top, body_w, body_h))
    elif s.table is not None:
        y = top
        if s.bullets:
            b = _fit_bullets(s.bullets, body_w, body_h * 0.4, sizes=(16, 15, 14, 13, 12, 11, 10))
            b.x, b.y = MARGIN, top
            boxes.append(b)
            y += b.h + 0.1
        t = _fit_table(s.table, body_w, bottom - y)
        t.x, t.y = MARGIN, y
        boxes.append(t)
    elif s.bullets:
        b = _fit_bullets(s.bullets, body_w, body_h, sizes=(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10))
        b.x, b.y = MARGIN, top
        boxes.append(b)
    return Layout(boxes)


def table_fits(s: Slide, min_size: float) -> bool:
    """Whether the slide's table fits its body at `min_size` points or more."""
    boxes = layout(s, "0 / 0").boxes
    t = next((b for b in boxes if b.kind == "table"), None)
    if t is None:
        return True
    foot = next((b.y for b in boxes if b.kind == "footnote"), H - 0.35)
    return t.size >= min_size and t.y + t.h <= foot


def check_glyphs(sample: str) -> None:
    """BadInput (one line naming the fix) when the PDF font lacks a glyph of `sample`, e.g. Cyrillic;
    matplotlib would otherwise draw empty boxes without a word."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    for weight in ("normal", "bold"):
        try:
            path = font_manager.findfont(
                font_manager.FontProperties(family=FONT, weight=weight), fallback_to_default=False
            )
            charmap = FT2Font(path).get_charmap()
        except (ValueError, OSError, RuntimeError):
            path, charmap = "none", {}
        lacking = sorted({c for c in sample if not c.isspace() and ord(c) not in charmap})
        if lacking:
            raise BadInput(
                f"the PDF font {FONT} ({weight}, {path}) has no glyph for {''.join(lacking[:5])!r}: install "
                "fonts-dejavu-core (apt-get install fonts-dejavu-core) or reinstall matplotlib, which ships it"
            )


def _aspect(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as im:
        return im.size[0] / im.size[1]


def image_fit(path: Path, box: Box) -> tuple[float, float, float, float]:
    """(x, y, w, h) of the image scaled into the box, aspect kept, centred horizontally, top-aligned."""
    from PIL import Image

    with Image.open(path) as im:
        iw, ih = im.size
    scale = min(box.w / iw, box.h / ih)
    w, h = iw * scale, ih * scale
    return box.x + (box.w - w) / 2, box.y, w, h


def _muted(v: str) -> bool:
    return v in MUTED


# ---------------------------------------------------------------- PDF (matplotlib)
def render_pdf(slides: Sequence[Slide], path: Path) -> Path:
    """One 16:9 page per slide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    with matplotlib.rc_context({"pdf.fonttype": 42, "font.family": FONT}), PdfPages(path) as pdf:
        info = pdf.infodict()
        info["Title"] = slides[0].title if slides else "report"
        for i, s in enumerate(slides, 1):
            fig = plt.figure(figsize=(W, H))
            for b in layout(s, f"{i} / {len(slides)}").boxes:
                _pdf_box(fig, s, b)
            pdf.savefig(fig)
            plt.close(fig)
    return path


def _pdf_text(fig, x, y_top, s_, size, color="black", bold=False, italic=False, ha="left") -> None:
    """Text on `fig` at (x, y_top) inches from the page's top left."""
    fig.text(
        x,
        H - y_top,
        s_,
        transform=fig.dpi_scale_trans,
        fontsize=size,
        color=color,
        ha=ha,
        va="top",
        fontweight="bold" if bold else "normal",
        fontstyle="italic" if italic else "normal",
    )


def _pdf_box(fig, s: Slide, b: Box) -> None:
    """Draw one laid-out box of `s` onto the page `fig`."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    tr = fig.dpi_scale_trans
    if b.kind == "title":
        _pdf_text(fig, b.x, b.y, b.lines[0], b.size, NAVY, bold=True)
        fig.add_artist(Rectangle((b.x, H - (b.y + b.h)), b.w, 0.03, transform=tr, color=ACCENT, lw=0))
    elif b.kind in ("subtitle", "footnote", "number"):
        color = "#333333" if b.kind == "subtitle" else GREY
        for j, ln in enumerate(b.lines):
            _pdf_text(
                fig,
                b.x + (b.w if b.kind == "number" else 0),
                b.y + j * line_h(b.size),
                ln,
                b.size,
                color,
                ha="right" if b.kind == "number" else "left",
            )
    elif b.kind == "bullets":
        y = b.y
        for level, lines in b.lines:
            indent = 0.3 + 0.35 * level
            _pdf_text(fig, b.x + indent - 0.25, y, "•" if level == 0 else "–", b.size, ACCENT)
            for ln in lines:
                _pdf_text(fig, b.x + indent, y, ln, b.size, "black" if level == 0 else "#333333")
                y += line_h(b.size)
            y += 0.35 * b.size / 72
    elif b.kind == "table":
        _pdf_table(fig, s.table, b)
    elif b.kind == "image" and s.image is not None:
        x, y, w, h = image_fit(s.image, b)
        ax = fig.add_axes((x / W, 1 - (y + h) / H, w / W, h / H))
        ax.imshow(plt.imread(str(s.image)), interpolation="antialiased")
        ax.axis("off")


def _pdf_table(fig, table: Table | None, b: Box) -> None:
    """A table drawn by hand: banded row backgrounds, then each cell's wrapped lines, then a closing rule."""
    from matplotlib.patches import Rectangle

    tr = fig.dpi_scale_trans
    y = b.y
    for r, (cells, rh) in enumerate(zip(b.cells, b.heights)):
        x = b.x
        bg = NAVY if r == 0 else (ZEBRA if r % 2 == 0 else "white")
        fig.add_artist(Rectangle((x, H - y - rh), b.w, rh, transform=tr, color=bg, lw=0))
        for c, lines in enumerate(cells):
            cw = b.cols[c]
            raw = " ".join(lines)
            color = "white" if r == 0 else (GREY if _muted(raw) else "black")
            a = table.col_align(c) if table else "c"
            tx, ha = {"l": (x + PAD_X, "left"), "r": (x + cw - PAD_X, "right")}.get(a, (x + cw / 2, "center"))
            for j, ln in enumerate(lines):
                _pdf_text(
                    fig,
                    tx,
                    y + PAD_Y + j * line_h(b.size),
                    ln,
                    b.size,
                    color,
                    bold=r == 0,
                    italic=r > 0 and _muted(raw),
                    ha=ha,
                )
            x += cw
        y += rh
    fig.add_artist(Rectangle((b.x, H - y), b.w, 0.015, transform=tr, color=NAVY, lw=0))


# ---------------------------------------------------------------- PPTX (python-pptx)
def render_pptx(slides: Sequence[Slide], path: Path) -> Path:
    """One slide per Slide, on a blank 16:9 layout, boxes where layout() puts them."""
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    prs.slide_width, prs.slide_height = Inches(W), Inches(H)
    blank = prs.slide_layouts[6]
    for i, s in enumerate(slides, 1):
        sl = prs.slides.add_slide(blank)
        for b in layout(s, f"{i} / {len(slides)}").boxes:
            _pptx_box(sl, s, b)
    path = Path(path)
    prs.core_properties.title = slides[0].title if slides else "report"
    prs.save(str(path))
    return path


def _rgb(hex_: str):
    from pptx.dml.color import RGBColor

    return RGBColor.from_string(hex_.lstrip("#"))


def _pptx_box(sl, s: Slide, b: Box) -> None:
    """Draw one laid-out box of `s` onto the pptx slide `sl`."""
    from pptx.enum.shapes import MSO_SHAPE
    from pptx.enum.text import PP_ALIGN
    from pptx.util import Inches

    if b.kind == "title":
        _pptx_textbox(sl, b, [(b.lines[0], {"bold": True, "color": NAVY})])
        bar = sl.shapes.add_shape(
            MSO_SHAPE.RECTANGLE, Inches(b.x), Inches(b.y + b.h - 0.03), Inches(b.w), Inches(0.03)
        )
        bar.fill.solid()
        bar.fill.fore_color.rgb = _rgb(ACCENT)
        bar.line.fill.background()
    elif b.kind in ("subtitle", "footnote"):
        color = "#333333" if b.kind == "subtitle" else GREY
        _pptx_textbox(sl, b, [(" ".join(b.lines), {"color": color})], h=b.h + 0.1)
    elif b.kind == "number":
        _pptx_textbox(sl, b, [(b.lines[0], {"color": GREY, "align": PP_ALIGN.RIGHT})])
    elif b.kind == "bullets":
        paras = [
            (
                ("• " if lvl == 0 else "    – ") + " ".join(lines),
                {"space": 0.35 * b.size, "color": "#000000" if lvl == 0 else "#333333"},
            )
            for lvl, lines in b.lines
        ]
        _pptx_textbox(sl, b, paras, h=b.h + 0.1)
    elif b.kind == "table" and s.table is not None:
        _pptx_table(sl, b, s.table)
    elif b.kind == "image" and s.image is not None:
        x, y, w, h = image_fit(s.image, b)
        sl.shapes.add_picture(str(s.image), Inches(x), Inches(y), Inches(w), Inches(h))


def _pptx_textbox(sl, b: Box, paras: list[tuple[str, dict]], h: float | None = None):
    """A text box at `b` with one paragraph per (text, style); style keys: align, space, size, bold, color."""
    from pptx.enum.text import MSO_AUTO_SIZE, PP_ALIGN
    from pptx.util import Inches, Pt

    tb = sl.shapes.add_textbox(Inches(b.x), Inches(b.y), Inches(b.w), Inches(h or b.h))
    tf = tb.text_frame
    tf.word_wrap = True
    tf.auto_size = MSO_AUTO_SIZE.NONE
    tf.margin_left = tf.margin_right = tf.margin_top = tf.margin_bottom = 0
    for j, (t, st) in enumerate(paras):
        p = tf.paragraphs[0] if j == 0 else tf.add_paragraph()
        p.alignment = st.get("align", PP_ALIGN.LEFT)
        if "space" in st:
            p.space_after = Pt(st["space"])
        run = p.add_run()
        run.text = t
        f = run.font
        f.size = Pt(st.get("size", b.size))
        f.bold = st.get("bold", False)
        f.color.rgb = _rgb(st.get("color", "#000000"))
    return tb


def _pptx_table(sl, b: Box, table: Table) -> None:
    """A native pptx table with the column widths and row heights layout() measured."""
    from pptx.enum.text import MSO_ANCHOR, PP_ALIGN
    from pptx.util import Inches, Pt

    rows = [table.header, *table.rows]
    gf = sl.shapes.add_table(len(rows), len(b.cols), Inches(b.x), Inches(b.y), Inches(b.w), Inches(b.h))
    tbl = gf.table
    tbl.first_row = True
    tbl.horz_banding = False
    for c, cw in enumerate(b.cols):
        tbl.columns[c].width = Inches(cw)
    for r, row in enumerate(rows):
        tbl.rows[r].height = Inches(b.heights[r])
        for c, v in enumerate(row):
            cell = tbl.cell(r, c)
            cell.margin_left = cell.margin_right = Inches(PAD_X)
            cell.margin_top = cell.margin_bottom = Inches(PAD_Y)
            cell.vertical_anchor = MSO_ANCHOR.TOP
            cell.fill.solid()
            cell.fill.fore_color.rgb = _rgb(NAVY if r == 0 else (ZEBRA if r % 2 == 0 else "#ffffff"))
            p = cell.text_frame.paragraphs[0]
            p.alignment = {"l": PP_ALIGN.LEFT, "r": PP_ALIGN.RIGHT}.get(table.col_align(c), PP_ALIGN.CENTER)
            run = p.add_run()
            run.text = v
            f = run.font
            f.size = Pt(b.size)
            f.bold = r == 0
            f.italic = r > 0 and _muted(v)
            f.color.rgb = _rgb("#ffffff" if r == 0 else (GREY if _muted(v) else "#000000"))
