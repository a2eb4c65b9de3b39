"""A photo, a scan or a drawing of one digit, prepared the way MNIST's digits were.

MNIST's digits are bright ink on a black background, size-normalized so the longer side of the ink's bounding box
is 20 pixels (aspect ratio kept, anti-aliased to grey levels), then placed in a 28x28 field so that the ink's centre
of mass is at the centre (LeCun, Cortes and Burges, "The MNIST database of handwritten digits"). A model trained on
MNIST only knows digits that look like that, so any image is brought there first:

1. grey levels (transparent pixels count as white paper, EXIF rotation applied);
2. ink and paper told apart by Otsu's threshold, the paper being the larger class; dark ink on light paper is
   inverted, so ink is bright; paper goes to 0 and ink to 255, whatever their colours and the lighting;
3. the ink's bounding box is cropped; a stroke too thin to survive the shrink to 20 px (a fine pen on a big photo)
   is thickened first;
4. scaled so its longer side is 20 px, then placed in 28x28 with its centre of mass at the centre.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digits.errors import UserError

SIDE, BOX = 28, 20
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm"}
WORK_SIDE = 100  # the ink's box is worked on at this size: enough for stroke estimates, cheap for any photo
MIN_STROKE = 2.0  # px at 20-px scale; MNIST's strokes are 2-3 px wide


MIN_SIDE = 8  # px: a smaller image cannot hold a legible digit (MNIST's ink box is 20 px)


def load(path: str | Path) -> Image.Image:
    """Open an image file; anything Pillow cannot read is a one-line UserError. Of an animation, the first frame
    that holds any contrast (a GIF often starts blank)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            frame = _first_frame_with_contrast(img)
            return ImageOps.exif_transpose(frame) or frame
    except FileNotFoundError:
        raise UserError("no such file", path) from None
    except Image.DecompressionBombError:  # Pillow's guard against a small file that decodes to gigabytes
        raise UserError(
            f"is too large to read (more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels); scale it down first",
            path,
        ) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"is not an image Pillow can read ({type(e).__name__})", path) from None


def _first_frame_with_contrast(img: Image.Image) -> Image.Image:
    frames = getattr(img, "n_frames", 1)
    for i in range(frames):
        img.seek(i)
        frame = img.copy()
        a = grey(frame)
        if a.size and float(a.max()) - float(a.min()) >= 16:
            return frame
    img.seek(0)
    return img.copy()


def grey(img: Image.Image) -> np.ndarray:
    """Float grey levels in [0, 255] from any of Pillow's modes: 16- and 32-bit integers and floats are scaled by
    their range, LAB by its lightness, CMYK and palettes through RGB. Transparency: strokes drawn on a transparent
    background are the ink whatever their colour (white ink included), shown against a contrasting paper."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
        if alpha.max() - alpha.min() >= 16:  # some of it is transparent: the opaque part is the drawing
            colour = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)
            opaque = alpha > 127
            light_ink = opaque.any() and float(colour[opaque].mean()) > 127
            paper = (0, 0, 0, 255) if light_ink else (255, 255, 255, 255)
        else:
            paper = (255, 255, 255, 255)
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, paper), rgba)
    if img.mode == "LAB":
        return np.asarray(img.getchannel("L"), dtype=np.float32)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" and np.nanmax(a, initial=0) <= 1.0 else 65535.0 if img.mode != "F" else 255.0
        if img.mode == "I" and np.nanmax(a, initial=0) <= 255:
            top = 255.0
        return np.clip(np.nan_to_num(a / top * 255.0), 0, 255).astype(np.float32)
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return np.asarray(img.convert("L"), dtype=np.float32)


def check_digit(prepared: np.ndarray, img: Image.Image, path: str | Path) -> np.ndarray:
    """A prepared image that shows no digit is a one-line error, not a confident prediction about nothing."""
    if min(img.size) < MIN_SIDE:
        raise UserError(
            f"is {img.width}x{img.height} pixels, too small to hold a digit (at least {MIN_SIDE}x{MIN_SIDE})", path
        )
    if not prepared.any():
        raise UserError("no digit found (the image is blank, or one flat colour)", path)
    return prepared


def otsu(values: np.ndarray) -> float:
    """The grey level that best splits values into two classes (Otsu, 1979)."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64).ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    levels = np.arange(256)
    weight0 = np.cumsum(hist)
    weight1 = total - weight0
    sum0 = np.cumsum(hist * levels)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(np.argmax(between)) + 0.5


def ink(a: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] (1 = full ink), paper 0, from grey levels of either polarity."""
    t = otsu(a)
    dark, light = a < t, a >= t
    if dark.sum() == 0 or light.sum() == 0:
        return np.zeros_like(a)  # one flat colour: no digit
    if light.sum() >= dark.sum():  # paper is the larger class: light paper, dark ink
        paper, pen = np.median(a[light]), np.percentile(a[dark], 10)
    else:
        paper, pen = np.median(a[dark]), np.percentile(a[light], 90)
    if abs(pen - paper) < 16:  # too little contrast to call anything ink
        return np.zeros_like(a)
    return np.clip((a - paper) / (pen - paper), 0.0, 1.0).astype(np.float32)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary shape: twice its area over its perimeter (exact for long thin strokes)."""
    area = mask.sum()
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    perimeter = max((mask & ~inner).sum(), 1)
    return float(2 * area / perimeter)


def _dilate(a: np.ndarray, k: int) -> np.ndarray:
    """Grey-level dilation by a k x k square (a max over shifted copies; Pillow's MaxFilter crashes on images
    smaller than its kernel)."""
    if k < 2:
        return a
    lo = k // 2
    padded = np.pad(a, ((lo, k - 1 - lo), (lo, k - 1 - lo)))
    h, w = a.shape
    return np.max([padded[i : i + h, j : j + w] for i in range(k) for j in range(k)], axis=0)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Anti-aliased resize of ink levels in [0, 1] to (width, height)."""
    img = Image.fromarray((a * 255).astype(np.uint8), "L")
    filt = Image.Resampling.BOX if size[0] < img.width else Image.Resampling.BILINEAR
    return np.asarray(img.resize(size, filt), dtype=np.float32) / 255


def mnist_style(img: Image.Image) -> np.ndarray:
    """uint8 [28, 28], bright ink on black, 20-px box, centred by mass. All zeros when no ink is found."""
    a = ink(grey(img))
    if not (a > 0.5).any():
        return np.zeros((SIDE, SIDE), np.uint8)
    mask = a > 0.25  # the box takes in the anti-aliased rim of the strokes too
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    a = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = a.shape
    if max(h, w) > WORK_SIDE:  # bring big photos down once; strokes are judged at this size
        s = WORK_SIDE / max(h, w)
        a = _resize(a, (max(1, round(w * s)), max(1, round(h * s))))
        h, w = a.shape
    scale = BOX / max(h, w)
    stroke = _stroke_width(a > 0.5) * scale
    if 0 < stroke < MIN_STROKE and scale < 1:
        a = _dilate(a, min(int(np.ceil((MIN_STROKE - stroke) / scale)), 8))
    box = _resize(a, (max(1, round(w * scale)), max(1, round(h * scale))))
    return _centre_by_mass(box)


def _centre_by_mass(box: np.ndarray) -> np.ndarray:
    h, w = box.shape
    total = box.sum()
    ys, xs = np.indices(box.shape)
    cy, cx = ((ys * box).sum() / total, (xs * box).sum() / total) if total > 0 else ((h - 1) / 2, (w - 1) / 2)
    # MNIST's centres of mass sit at row and column index 14 (13.5-14.5), half a pixel past the field's middle.
    top = int(np.clip(round(SIDE / 2 - cy), 0, SIDE - h))
    left = int(np.clip(round(SIDE / 2 - cx), 0, SIDE - w))
    out = np.zeros((SIDE, SIDE), np.float32)
    out[top : top + h, left : left + w] = box
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
