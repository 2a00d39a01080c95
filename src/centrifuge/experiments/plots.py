"""Small figures drawn with Pillow (no plotting library needed): bar charts and image strips."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Colour = tuple[int, int, int]

WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
GREY: Colour = (150, 150, 150)
LIGHT: Colour = (225, 225, 225)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _nice_step(span: float) -> float:
    """A round tick step giving about 5 ticks over ``span``."""
    raw = span / 5
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _value_axis(img: Image.Image, draw: ImageDraw.ImageDraw, ylabel: str, box: tuple[int, int, int, int],
                top: float) -> Callable[[float], float]:
    """Draw the rotated y label, the grid with its tick values and the axes in ``box`` (left, right, y0, y1)
    for values from 0 to about ``top``; return the value -> pixel row mapping."""
    font, small = _font(13), _font(11)
    step = _nice_step(top * 1.15 if top > 0 else 1.0)
    ymax = step * math.ceil(top * 1.15 / step) if top > 0 else 1.0
    left, right, y0, y1 = box
    if ylabel:
        label = Image.new("RGB", _text_size(draw, ylabel, font), WHITE)
        ImageDraw.Draw(label).text((0, 0), ylabel, fill=BLACK, font=font, anchor="lt")
        img.paste(label.rotate(90, expand=True), (4, (y0 + y1) // 2 - label.width // 2))

    def y_of(v: float) -> float:
        return y1 - (y1 - y0) * max(min(v / ymax, 1.0), 0.0)

    tick = 0.0
    while tick <= ymax + 1e-9:
        draw.line([(left, y_of(tick)), (right, y_of(tick))], fill=LIGHT)
        draw.text((left - 6, y_of(tick)), f"{tick:g}", fill=BLACK, font=small, anchor="rm")
        tick += step
    draw.line([(left, y0), (left, y1), (right, y1)], fill=BLACK)
    return y_of


def bar_chart(labels: Sequence[str], values: Sequence[float], colours: Sequence[Colour], title: str,
              ylabel: str = "", reference: tuple[str, float] | None = None,
              size: tuple[int, int] = (720, 380)) -> Image.Image:
    """Vertical bars with their values written above them; ``reference`` draws a dashed labelled line.

    Bars of light colours (e.g. white) get a dark outline so they stay visible.
    """
    width, height = size
    img = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(img)
    font, small, big = _font(13), _font(11), _font(15)
    finite = [v for v in values if math.isfinite(v)] + ([reference[1]] if reference else [])
    top = max(finite) if finite else 1.0
    left, right, y0, y1 = 62, width - 16, 40, height - 58  # plot area
    draw.text((width // 2, 10), title, fill=BLACK, font=big, anchor="mt")
    y_of = _value_axis(img, draw, ylabel, (left, right, y0, y1), top)
    n = max(len(values), 1)
    slot = (right - left) / n
    for k, (lab, v, c) in enumerate(zip(labels, values, colours, strict=True)):
        x0, x1 = left + slot * k + slot * 0.15, left + slot * (k + 1) - slot * 0.15
        if math.isfinite(v):
            outline = BLACK if sum(c) > 600 else c
            draw.rectangle([x0, y_of(v), x1, y1], fill=c, outline=outline)
            draw.text(((x0 + x1) / 2, y_of(v) - 3), f"{v:.3f}", fill=BLACK, font=small, anchor="md")
        draw.text(((x0 + x1) / 2, y1 + 6), lab, fill=BLACK, font=font, anchor="ma")
    if reference is not None:
        name, v = reference
        y = y_of(v)
        for x in range(left, right, 12):
            draw.line([(x, y), (min(x + 6, right), y)], fill=(200, 40, 40), width=2)
        draw.text((right - 4, y - 3), f"{name} {v:.3f}", fill=(200, 40, 40), font=small, anchor="rd")
    return img


def grouped_bar_chart(groups: Sequence[str], series: dict[str, Sequence[float]], colours: Sequence[Colour],
                      title: str, ylabel: str = "", size: tuple[int, int] = (720, 380)) -> Image.Image:
    """Bars for several series side by side in each group, with a legend (missing values are NaN)."""
    width, height = size
    img = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(img)
    font, small, big = _font(13), _font(11), _font(15)
    finite = [v for vals in series.values() for v in vals if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    left, right, y0, y1 = 62, width - 16, 58, height - 40
    draw.text((width // 2, 10), title, fill=BLACK, font=big, anchor="mt")
    x = left
    for (name, _), c in zip(series.items(), colours, strict=False):
        draw.rectangle([x, 34, x + 12, 46], fill=c)
        draw.text((x + 16, 40), name, fill=BLACK, font=font, anchor="lm")
        x += 16 + _text_size(draw, name, font)[0] + 20
    y_of = _value_axis(img, draw, ylabel, (left, right, y0, y1), top)
    slot = (right - left) / max(len(groups), 1)
    k_series = max(len(series), 1)
    for g, name in enumerate(groups):
        inner = slot * 0.8 / k_series
        for s, (vals, c) in enumerate(zip(series.values(), colours, strict=False)):
            v = vals[g]
            if not math.isfinite(v):
                continue
            x0 = left + slot * g + slot * 0.1 + inner * s
            draw.rectangle([x0, y_of(v), x0 + inner - 2, y1], fill=c)
            draw.text((x0 + inner / 2, y_of(v) - 3), f"{v:.3f}", fill=BLACK, font=small, anchor="md")
        draw.text((left + slot * (g + 0.5), y1 + 6), name, fill=BLACK, font=font, anchor="ma")
    return img


def image_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], header: Sequence[str] = (),
               cell: int = 96, label_width: int = 170) -> Image.Image:
    """A grid of images: each row is ``(label, [uint8 HxWx3 images])``, scaled to ``cell`` pixels high."""
    font = _font(12)
    n_cols = max((len(images) for _, images in rows), default=0)
    head = 20 if header else 0
    img = Image.new("RGB", (label_width + n_cols * (cell + 4), head + len(rows) * (cell + 4)), WHITE)
    draw = ImageDraw.Draw(img)
    for c, text in enumerate(header):
        draw.text((label_width + c * (cell + 4) + cell // 2, 4), text, fill=BLACK, font=font, anchor="ma")
    for r, (label, images) in enumerate(rows):
        y = head + r * (cell + 4)
        draw.multiline_text((6, y + cell // 2), label, fill=BLACK, font=font, anchor="lm")
        for c, frame in enumerate(images):
            tile = Image.fromarray(frame)
            tile = tile.resize((max(1, round(cell * tile.width / tile.height)), cell), Image.BILINEAR)
            img.paste(tile, (label_width + c * (cell + 4), y))
    return img


def line_chart(series: dict[str, Sequence[tuple[float, float]]], colours: Sequence[Colour], title: str,
               xlabel: str = "", ylabel: str = "", reference: tuple[str, float] | None = None,
               size: tuple[int, int] = (720, 380)) -> Image.Image:
    """Lines through ``(x, y)`` points, one per series, with dots and a legend; ``reference`` draws a dashed
    labelled level (e.g. the identity's 1.0)."""
    width, height = size
    img = Image.new("RGB", size, WHITE)
    draw = ImageDraw.Draw(img)
    font, small, big = _font(13), _font(11), _font(15)
    ys = [y for pts in series.values() for _, y in pts if math.isfinite(y)] + ([reference[1]] if reference else [])
    xs = [x for pts in series.values() for x, _ in pts] or [0.0, 1.0]
    left, right, y0, y1 = 62, width - 16, 58, height - 46
    draw.text((width // 2, 10), title, fill=BLACK, font=big, anchor="mt")
    x = left
    for name, c in zip(series, colours, strict=False):
        draw.rectangle([x, 34, x + 12, 46], fill=c)
        draw.text((x + 16, 40), name, fill=BLACK, font=font, anchor="lm")
        x += 16 + _text_size(draw, name, font)[0] + 20
    y_of = _value_axis(img, draw, ylabel, (left, right, y0, y1), max(ys) if ys else 1.0)
    xmax = max(xs) or 1.0
    step = _nice_step(xmax)

    def x_of(v: float) -> float:
        return left + (right - left) * v / xmax

    tick = 0.0
    while tick <= xmax + 1e-9:
        draw.text((x_of(tick), y1 + 5), f"{tick:g}", fill=BLACK, font=small, anchor="ma")
        tick += step
    if xlabel:
        draw.text(((left + right) // 2, height - 6), xlabel, fill=BLACK, font=font, anchor="mb")
    if reference is not None:
        for px in range(left, right, 12):
            draw.line([(px, y_of(reference[1])), (min(px + 6, right), y_of(reference[1]))], fill=GREY, width=1)
        draw.text((right - 4, y_of(reference[1]) - 3), reference[0], fill=GREY, font=small, anchor="rd")
    for pts, c in zip(series.values(), colours, strict=False):
        line = [(x_of(px), y_of(py)) for px, py in sorted(pts) if math.isfinite(py)]
        if len(line) > 1:
            draw.line(line, fill=c, width=2)
        for px, py in line:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)
    return img
