"""How the proxy set draws (dlib.data.proxy): smooth and busy backgrounds, the classes' shapes and textures.

Pure functions of a random generator and pixel offsets; :mod:`dlib.data.proxy` composes them into images, and
the stand-ins' pretext task (dlib.experiments.pretrain) reuses them so its images look like the proxy's.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def smooth_field(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1], (size, size): a (cells x cells) grid, bilinearly upsampled."""
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1))
    t = np.linspace(0, cells, size)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def background(rng: np.random.Generator, size: int, kind: str = "gradient") -> np.ndarray:
    """Float32 (size, size, 3) in uint8 units: a muted two-colour gradient plus blotches ("gradient"), or
    ("busy") a muted colour with strong high-frequency blotches and grey lines."""
    if kind == "busy":
        return busy_background(rng, size)
    grey = rng.uniform(70, 180, 2)
    c1 = np.clip(grey[0] + rng.normal(0, 22, 3), 30, 220)
    c2 = np.clip(grey[1] + rng.normal(0, 22, 3), 30, 220)
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = np.clip(0.5 + (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)), 0, 1)[..., None]
    img = c1 * (1 - t) + c2 * t
    img += 18 * smooth_field(rng, size, cells=int(rng.integers(3, 7)))[..., None]
    return img.astype(np.float32)


def busy_background(rng: np.random.Generator, size: int) -> np.ndarray:
    grey = rng.uniform(70, 180)
    img = np.clip(grey + rng.normal(0, 22, 3), 30, 220)[None, None, :] * np.ones((size, size, 1), np.float32)
    for cells, amp in ((int(rng.integers(8, 14)), 28.0), (int(rng.integers(16, 24)), 16.0)):
        img += amp * smooth_field(rng, size, cells=cells)[..., None]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(2, 6))):  # straight grey lines, 1-2 px wide
        a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        img[segment_dist(xx, yy, (a[0], a[1]), (b[0], b[1])) <= rng.uniform(0.5, 1.0)] = rng.uniform(60, 200)
    return img.astype(np.float32)


def segment_dist(px: np.ndarray, py: np.ndarray, a: tuple[float, float], b: tuple[float, float]) -> np.ndarray:
    """Distance (px) from points (px, py) to the segment a-b."""
    ax, ay = a
    bx, by = b
    dx, dy = bx - ax, by - ay
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return np.hypot(px - (ax + t * dx), py - (ay + t * dy))


def shape_mask(cls: Any, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Bool mask of the class's shape; (dx, dy) are pixel offsets from the object's centre."""
    hw, hh = (r, r / cls.aspect) if cls.aspect >= 1 else (r * cls.aspect, r)
    u, v = dx / hw, dy / hh
    s = cls.shape
    if s in ("disc", "ellipse"):
        return u * u + v * v <= 1
    if s == "rect":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if s == "triangle":  # apex up
        return (np.abs(v) <= 1) & (np.abs(u) <= (v + 1) / 2)
    if s == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if s == "cross":
        return ((np.abs(u) <= 1) & (np.abs(v) <= 0.3)) | ((np.abs(u) <= 0.3) & (np.abs(v) <= 1))
    if s == "trapezoid":  # a hull: wide deck on top, narrow keel below
        return (np.abs(v) <= 1) & (np.abs(u) <= 0.75 - 0.25 * v)
    line = max(1.0, 0.05 * r)  # thin-structure line width (px): 1 px for small objects, ~2 px for large ones
    if s == "bicycle":  # two wheels and a frame, all drawn as lines of width `line`
        rw = 0.42 * hw
        lx, rx, wy = -0.55 * hw, 0.55 * hw, 0.35 * hh
        mask = np.abs(np.hypot(dx - lx, dy - wy) - rw) <= line / 2
        mask |= np.abs(np.hypot(dx - rx, dy - wy) - rw) <= line / 2
        seat, head = (-0.15 * hw, -0.45 * hh), (0.4 * hw, -0.55 * hh)
        for a, b in (((lx, wy), seat), (seat, (0.05 * hw, wy)), ((0.05 * hw, wy), (lx, wy)),
                     (seat, head), (head, (rx, wy)), ((0.05 * hw, wy), head),
                     (head, (0.25 * hw, -hh)), ((-0.3 * hw, -0.5 * hh), (0.0, -0.5 * hh))):
            mask |= segment_dist(dx, dy, a, b) <= line / 2
        return mask
    if s == "chair":  # a seat and a back (bars) on four thin legs
        bar = max(2.0, 0.16 * r)
        mask = (np.abs(dx) <= 0.7 * hw) & (np.abs(dy - 0.05 * hh) <= bar / 2)  # seat
        mask |= (np.abs(dx + 0.6 * hw) <= bar / 2) & (dy >= -hh) & (dy <= 0.05 * hh)  # back
        for x0 in (-0.6 * hw, -0.25 * hw, 0.3 * hw, 0.65 * hw):  # legs
            mask |= segment_dist(dx, dy, (x0, 0.05 * hh), (x0 * 1.05, hh)) <= line / 2
        return mask
    raise ValueError(f"unknown proxy shape {s!r}")


def texture(kind: str, dx: np.ndarray, dy: np.ndarray, r: float, cycles: float) -> np.ndarray:
    """Brightness texture in [-1, 1]; its period is r / cycles px (object-relative)."""
    w = 2 * np.pi * cycles / r
    if kind == "flat":
        return np.zeros_like(dx)
    if kind == "hstripes":
        return np.sin(w * dy)
    if kind == "vstripes":
        return np.sin(w * dx)
    if kind == "checker":
        return np.sign(np.sin(w * dx) * np.sin(w * dy))
    if kind == "dots":
        return np.where(np.cos(w * dx) * np.cos(w * dy) > 0.5, -1.0, 0.4)
    if kind == "rings":
        return np.sin(w * np.hypot(dx, dy))
    raise ValueError(f"unknown proxy texture {kind!r}")
