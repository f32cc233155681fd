"""Animation frames and files: labelled, upscaled tiles saved as a GIF (Pillow) or an MP4.

MP4 needs the optional ``imageio-ffmpeg`` package; GIFs need nothing beyond Pillow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facediff.errors import FacediffError

FORMATS = ("gif", "mp4", "none")
FONT_SIZE = 13


@lru_cache(maxsize=8)
def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib, so figures and frames match), else Pillow's."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default(size=size)


def upscale(img: Image.Image | np.ndarray, min_size: int = 96,
            unit: int | None = None) -> Image.Image:
    """Nearest-neighbour upscale by the smallest integer factor that makes ``unit`` pixels
    (default: the short side; for a grid, one face) at least ``min_size`` (a 32 px face
    becomes 96 px with crisp pixels)."""
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img)
    factor = max(1, math.ceil(min_size / (unit or min(img.size))))
    if factor == 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def _text_size(text: str, size: int) -> tuple[int, int]:
    box = font(size).getbbox(text)
    return int(box[2] - box[0]), int(box[3] - box[1])


def with_band(img: Image.Image, lines: Sequence[str], size: int = FONT_SIZE,
              pad: int = 4) -> Image.Image:
    """``img`` under a white band holding ``lines`` of text (centred, one per line)."""
    line_h = size + 4
    band = pad * 2 + line_h * len(lines)
    width = max(img.width, *(_text_size(s, size)[0] + 2 * pad for s in lines))
    out = Image.new("RGB", (width, img.height + band), "white")
    out.paste(img.convert("RGB"), ((width - img.width) // 2, band))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(lines):
        w = _text_size(text, size)[0]
        draw.text(((width - w) // 2, pad + i * line_h), text, fill=(0, 0, 0), font=font(size))
    return out


def tile(cells: Sequence[Sequence[Image.Image]], *, col_labels: Sequence[str] | None = None,
         row_labels: Sequence[str] | None = None, pad: int = 4,
         size: int = FONT_SIZE) -> Image.Image:
    """Images in rows and columns (all the size of the first), with optional labels above
    the columns and left of the rows."""
    cw, ch = cells[0][0].size
    ncol = max(len(r) for r in cells)
    left = 0 if not row_labels else max(_text_size(s, size)[0] for s in row_labels) + 2 * pad
    top = 0 if not col_labels else size + 2 * pad
    out = Image.new("RGB", (left + ncol * (cw + pad) + pad, top + len(cells) * (ch + pad) + pad),
                    "white")
    draw = ImageDraw.Draw(out)
    for c, text in enumerate(col_labels or []):
        w = _text_size(text, size)[0]
        draw.text((left + pad + c * (cw + pad) + (cw - w) // 2, pad), text, fill=(0, 0, 0),
                  font=font(size))
    for r, row in enumerate(cells):
        y = top + pad + r * (ch + pad)
        if row_labels:
            draw.text((pad, y + (ch - size) // 2), row_labels[r], fill=(0, 0, 0),
                      font=font(size))
        for c, img in enumerate(row):
            out.paste(img.convert("RGB"), (left + pad + c * (cw + pad), y))
    return out


def check_format(fmt: str) -> None:
    """Fail before any work if ``fmt`` cannot be written here."""
    if fmt not in FORMATS:
        raise FacediffError(f"unknown animation format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise FacediffError("MP4 animations need imageio-ffmpeg: pip install imageio-ffmpeg "
                                "(or use --animation gif)") from None


def animation_path(out: str | Path, fmt: str) -> Path:
    """The animation's file beside the figure: forward.png -> forward.gif."""
    return Path(out).with_suffix(f".{fmt}")


def save_animation(frames: Sequence[Image.Image], path: str | Path,
                   durations: Sequence[int] | int = 100) -> Path:
    """Write ``frames`` as a looping GIF or an MP4 (by the suffix); ``durations`` in ms, one
    for all frames or one per frame. Frames of different sizes are padded to the largest."""
    if not frames:
        raise ValueError("no frames to save")
    path = Path(path)
    ms = [durations] * len(frames) if isinstance(durations, int) else list(durations)
    if len(ms) != len(frames):
        raise ValueError(f"{len(ms)} durations for {len(frames)} frames")
    w = max(f.width for f in frames)
    h = max(f.height for f in frames)
    if path.suffix == ".mp4":  # yuv420p wants even sides
        w, h = w + w % 2, h + h % 2
    same = [_pad_to(f.convert("RGB"), w, h) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gif":
        same[0].save(path, save_all=True, append_images=same[1:], duration=ms, loop=0,
                     optimize=True, disposal=1)
    elif path.suffix == ".mp4":
        _save_mp4(same, path, ms)
    else:
        raise ValueError(f"unknown animation suffix {path.suffix!r}")
    return path


def _pad_to(img: Image.Image, w: int, h: int) -> Image.Image:
    if img.size == (w, h):
        return img
    out = Image.new("RGB", (w, h), "white")
    out.paste(img, ((w - img.width) // 2, 0))
    return out


def _save_mp4(frames: Sequence[Image.Image], path: Path, ms: Sequence[int]) -> None:
    check_format("mp4")
    import imageio_ffmpeg

    fps = 25
    w, h = frames[0].size
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, macro_block_size=2,
                                         pix_fmt_out="yuv420p", quality=8)
    writer.send(None)
    try:
        for frame, d in zip(frames, ms, strict=True):
            arr = np.ascontiguousarray(np.asarray(frame))
            for _ in range(max(1, round(d * fps / 1000))):
                writer.send(arr)
    finally:
        writer.close()
