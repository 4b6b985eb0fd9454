"""The built-in proxy data set (``cfg.data.dataset == "proxy"``): drawn by code, cached, never downloaded.

It has the interface of every data set in :mod:`dlib.data` (``len``, ``ids``, ``ds[i] -> (image, label)``).

**It is a proxy, not PASCAL VOC.** It is drawn by code from a seed, cached under
``<repo>/.cache/proxy/`` (or ``$DLIB_CACHE_DIR/proxy``) and nothing is downloaded. It exists so
that the papers' phenomena can be measured on a small network trained from scratch on 2 CPU
cores in about a minute. The recipe (:func:`make_proxy_sample`):

* **Background**: a smooth two-colour gradient of muted, low-saturation colours plus a
  low-frequency blotch field; labelled 0.
* **Objects**: 1-4 per image (2-6 in the large set). Each of the 20 classes has a shape
  (disc, ellipse, rectangle, triangle, cross, diamond, trapezoid), a saturated base colour and a
  brightness texture (flat, stripes, checker, dots, concentric rings) whose period is a fixed
  fraction of the object's size. Colours are shared by two or three classes, so shape and
  texture matter too. Object edges are hard colour edges and coincide with the label's edges
  (a stride-8 network blurs them; the fully connected CRF can recover them).
* **Scale**: the object size (half of its larger side) spans a factor of 5 (``0.06 .. 0.30`` of
  the image side) for every class; since the texture scales with the object, the same class
  looks different in pixels at different sizes, and the context ring of a large object lies far
  from its centre. In **val** (and test) the size is log-uniform over that range; in **train**
  it is log-normal (std 0.35 in log units) centred on a size of about 0.1 of the side, so large
  objects (above 0.2 of the side) are rare in training: about 4% of the objects, against 25% in
  val. That is the scale problem that scale augmentation (Aug) and multi-scale inputs (MSC,
  which shrink large objects to familiar sizes) address.
* **Context**: four pairs of classes (cat/dog, cow/sheep, bus/train, sofa/diningtable) look
  identical; only a ring drawn around the object at a gap of a quarter of its size tells them
  apart (light ring for the first, dark ring for the second; the ring is background). In the
  middle of a large object the ring is 40-60 px away, so only a network with a large field of
  view can classify those pixels (what LargeFOV / ASPP address).
* **Thin structures**: "bicycle" is a wire frame (two wheel circles and a frame drawn with
  1-2 px lines) and "chair" is a seat and back on thin legs; their labels are the thin lines
  themselves, which a stride-8 network cannot resolve (DeepLab v2, Sec. 4.1 failure modes).
* **Noise**: per-object colour and brightness jitter and Gaussian pixel noise.

The ``large=True`` set stands in for MS-COCO pretraining (DeepLab v2, Table 4 "+COCO"): the same 21 classes
drawn from **another distribution**, as COCO differs from VOC: busy backgrounds (high-frequency blotches and grey
lines instead of a smooth gradient), grey clutter shapes, more objects per image (3-7), and smaller objects
(log-normal sizes centred lower than train's, so large objects are rarer still: it does not teach the scales
that scale augmentation teaches), with wider colour, brightness and noise jitter.
Train, val, test and large sets are drawn from disjoint seeds; the test split's images also carry
:data:`PROXY_TEST_DRAW`, new with each proxy version, so a new version's test split is one nobody has looked at.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlib.core.constants import IGNORE_INDEX
from dlib.core.io import atomic_write_bytes
from dlib.data.proxy_drawing import background, shape_mask, texture

PROXY_VERSION = 4  # bump when the recipe changes: the cache key includes it
# Part of every test-split image's seed. Drawn anew with each proxy version (bump it with PROXY_VERSION) and
# never looked at while a design is chosen on the development ("val") split. 5: a new draw for the cpu profile's
# batch-8 design (the draw-4 test split was reported once, for the batch-4 design).
PROXY_TEST_DRAW = 5

_COLOURS = {  # saturated object colours, RGB
    "red": (200, 40, 40), "orange": (235, 135, 30), "yellow": (225, 210, 40),
    "green": (45, 170, 60), "cyan": (40, 195, 205), "blue": (40, 70, 205),
    "magenta": (195, 45, 185), "brown": (135, 80, 35), "pink": (245, 150, 175),
    "purple": (105, 45, 165),
}
_RING_COLOURS = {"light": (245, 245, 245), "dark": (12, 12, 12)}


@dataclass(frozen=True)
class ProxyClass:
    """How one proxy class is drawn (see the module docstring)."""

    index: int
    name: str
    shape: str  # disc, ellipse, rect, triangle, cross, diamond, trapezoid, bicycle, chair
    aspect: float  # width / height of the bounding box
    colour: str  # key of _COLOURS
    texture: str  # flat, hstripes, vstripes, checker, dots, rings
    ring: str | None = None  # context ring ("light" / "dark") for the look-alike pairs
    thin: bool = False  # drawn with 1-2 px lines


PROXY_CLASSES: tuple[ProxyClass, ...] = (
    ProxyClass(1, "aeroplane", "cross", 1.0, "cyan", "flat"),
    ProxyClass(2, "bicycle", "bicycle", 1.6, "magenta", "flat", thin=True),
    ProxyClass(3, "bird", "triangle", 1.0, "yellow", "flat"),
    ProxyClass(4, "boat", "trapezoid", 2.0, "blue", "hstripes"),
    ProxyClass(5, "bottle", "rect", 0.4, "green", "flat"),
    ProxyClass(6, "bus", "rect", 2.0, "yellow", "vstripes", ring="light"),
    ProxyClass(7, "car", "ellipse", 2.0, "red", "flat"),
    ProxyClass(8, "cat", "disc", 1.0, "orange", "dots", ring="light"),
    ProxyClass(9, "chair", "chair", 0.8, "orange", "flat", thin=True),
    ProxyClass(10, "cow", "ellipse", 1.5, "brown", "checker", ring="dark"),
    ProxyClass(11, "diningtable", "rect", 1.4, "purple", "hstripes", ring="dark"),
    ProxyClass(12, "dog", "disc", 1.0, "orange", "dots", ring="dark"),
    ProxyClass(13, "horse", "diamond", 1.3, "brown", "flat"),
    ProxyClass(14, "motorbike", "disc", 1.0, "red", "rings"),
    ProxyClass(15, "person", "ellipse", 0.45, "pink", "flat"),
    ProxyClass(16, "pottedplant", "diamond", 1.0, "green", "checker"),
    ProxyClass(17, "sheep", "ellipse", 1.5, "brown", "checker", ring="light"),
    ProxyClass(18, "sofa", "rect", 1.4, "purple", "hstripes", ring="light"),
    ProxyClass(19, "train", "rect", 2.0, "yellow", "vstripes", ring="dark"),
    ProxyClass(20, "tvmonitor", "rect", 1.3, "blue", "flat"),
)
CONTEXT_PAIRS = ((8, 12), (10, 17), (6, 19), (18, 11))  # look-alikes told apart only by the ring
THIN_CLASSES = (2, 9)  # bicycle (wire frame), chair (thin legs)


@dataclass(frozen=True)
class ProxyRecipe:
    """The generator's knobs; sizes are fractions of the image side."""

    min_size: float = 0.05  # object size (half its larger side) lies in [min, max] ...
    max_size: float = 0.40
    size_sigma: float | None = None  # ... log-uniform (None) or log-normal with this std (log units) ...
    size_centre: float = 0.5  # ... centred this far along the log range (0 = min, 1 = max)
    min_objects: int = 2
    max_objects: int = 5
    colour_jitter: float = 12.0  # std of the per-object RGB offset (uint8 units)
    brightness: tuple[float, float] = (0.85, 1.15)
    texture_amplitude: float = 0.28  # brightness modulation of the texture
    texture_cycles: float = 2.5  # texture cycles per object size
    ring_gap: float = 0.25  # context ring: gap to the object, as a fraction of its size
    noise: float = 5.0  # Gaussian pixel noise std (uint8 units)
    clutter: int = 0  # grey distractor shapes in the background (labelled background), up to this many
    background: str = "gradient"  # "gradient" (smooth, the task's) or "busy" (high-frequency blotches and lines)


PROXY_RECIPE = ProxyRecipe()  # val / test: every size in the range equally likely (log scale)
PROXY_RECIPE_TRAIN = ProxyRecipe(size_sigma=0.4, size_centre=0.3)  # train: small/medium common, large rare
# The "COCO" stand-in: another distribution of the same classes. Busy, cluttered backgrounds, more and smaller
# objects (large ones rarer than in train), wider colour, brightness and noise jitter.
PROXY_RECIPE_LARGE = ProxyRecipe(size_sigma=0.4, size_centre=0.2, min_objects=3, max_objects=7, colour_jitter=20.0,
                                 brightness=(0.75, 1.25), texture_cycles=3.0, noise=8.0, clutter=6,
                                 background="busy")


def proxy_recipe(split: str = "val", large: bool = False) -> ProxyRecipe:
    """The recipe a split is drawn with: train concentrates on small/medium sizes, val/test and the large set do not."""
    if large:
        return PROXY_RECIPE_LARGE
    return PROXY_RECIPE_TRAIN if split == "train" else PROXY_RECIPE


def _extent(cls: ProxyClass, r: float, recipe: ProxyRecipe) -> float:
    """Radius (px) of the disc that holds the object and its context ring."""
    hw, hh = (r, r / cls.aspect) if cls.aspect >= 1 else (r * cls.aspect, r)
    return np.hypot(hw, hh) + (recipe.ring_gap + 0.1) * r if cls.ring else np.hypot(hw, hh)


def make_proxy_sample(rng: np.random.Generator, size: int = 128, *, large: bool = False, split: str = "val",
                      recipe: ProxyRecipe | None = None, classes: Sequence[int] | None = None,
                      return_objects: bool = False):
    """One proxy image and label: ``(image uint8 (size, size, 3), label uint8 (size, size))``.

    ``split`` picks the size distribution (:func:`proxy_recipe`: "train" concentrates on medium sizes,
    "val"/"test" spread them log-uniformly); ``recipe`` overrides it.
    ``classes`` restricts the object classes drawn (default: all 20). With ``return_objects``
    a third element lists the objects drawn, back to front: dicts with ``cls``, ``name``,
    ``size`` (px, half of the larger side), ``centre`` (y, x) and ``thin``.
    """
    if size < 16:
        raise ValueError(f"proxy image size must be at least 16 px, got {size}")
    recipe = recipe or proxy_recipe(split, large)
    pool = [c for c in PROXY_CLASSES if classes is None or c.index in set(classes)]
    if not pool:
        raise ValueError(f"classes={classes!r} names none of the proxy classes 1..20")
    image = background(rng, size, recipe.background)
    if recipe.clutter:
        _add_clutter(rng, image, recipe.clutter, size)
    label = np.zeros((size, size), dtype=np.uint8)
    placed: list[tuple[float, float, float]] = []  # (cy, cx, extent)
    objects = []
    for cls, r in _draw_objects(rng, pool, recipe, size):
        ext = _extent(cls, r, recipe)
        for _ in range(25):  # rejection sampling: limit overlap so every object stays recognisable
            cy, cx = rng.uniform(0.1 * size, 0.9 * size, 2)
            if all(np.hypot(cy - py, cx - px) >= 0.6 * (ext + pe) for py, px, pe in placed):
                break
        else:
            continue
        placed.append((cy, cx, ext))
        if _paint_object(rng, image, label, cls, r, (cy, cx), ext, recipe):
            objects.append({"cls": cls.index, "name": cls.name, "size": r, "centre": (float(cy), float(cx)),
                            "thin": cls.thin})
    image += rng.normal(0, recipe.noise, image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return (image, label, objects) if return_objects else (image, label)


def _draw_objects(rng: np.random.Generator, pool: Sequence[ProxyClass], recipe: ProxyRecipe,
                  size: int) -> list[tuple[ProxyClass, float]]:
    """The objects of one image as (class, size in px), largest first (small ones are drawn on top)."""
    n = int(rng.integers(recipe.min_objects, recipe.max_objects + 1))
    log_lo, log_hi = np.log(recipe.min_size * size), np.log(recipe.max_size * size)
    wanted = []
    for _ in range(n):
        cls = pool[int(rng.integers(len(pool)))]
        if recipe.size_sigma is None:
            log_r = rng.uniform(log_lo, log_hi)
        else:
            centre = log_lo + recipe.size_centre * (log_hi - log_lo)
            log_r = np.clip(rng.normal(centre, recipe.size_sigma), log_lo, log_hi)
        wanted.append((cls, float(np.exp(log_r))))
    wanted.sort(key=lambda cr: -cr[1])
    return wanted


def _paint_object(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, cls: ProxyClass, r: float,
                  centre: tuple[float, float], ext: float, recipe: ProxyRecipe) -> bool:
    """Paint one object (and its context ring) at ``centre`` into ``image`` and ``label``; False if off the image."""
    cy, cx = centre
    size = label.shape[0]
    y0, y1 = max(int(cy - ext - 2), 0), min(int(cy + ext + 3), size)
    x0, x1 = max(int(cx - ext - 2), 0), min(int(cx + ext + 3), size)
    if y0 >= y1 or x0 >= x1:
        return False
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if cls.ring:  # context ring (labelled background) around the object
        hw, hh = (r, r / cls.aspect) if cls.aspect >= 1 else (r * cls.aspect, r)
        reach = np.hypot(hw, hh) if cls.shape == "rect" else r  # farthest point of the shape
        radius = reach + recipe.ring_gap * r
        ring = np.abs(np.hypot(dx, dy) - radius) <= max(1.0, 0.06 * r)
        image[y0:y1, x0:x1][ring] = _RING_COLOURS[cls.ring]
    mask = shape_mask(cls, dx, dy, r)
    base = np.asarray(_COLOURS[cls.colour], np.float32) + rng.normal(0, recipe.colour_jitter, 3)
    base *= rng.uniform(*recipe.brightness)
    tex = texture(cls.texture, dx, dy, r, recipe.texture_cycles)
    colour = base[None, None, :] * (1 + recipe.texture_amplitude * tex[..., None])
    image[y0:y1, x0:x1][mask] = colour[mask]
    label[y0:y1, x0:x1][mask] = cls.index
    return True


def _add_clutter(rng: np.random.Generator, image: np.ndarray, count: int, size: int) -> None:
    """Up to ``count`` small grey shapes (any proxy shape, no class colour) painted onto the background."""
    for _ in range(int(rng.integers(0, count + 1))):
        cls = PROXY_CLASSES[int(rng.integers(len(PROXY_CLASSES)))]
        r = float(np.exp(rng.uniform(np.log(0.03 * size), np.log(0.12 * size))))
        cy, cx = rng.uniform(0, size, 2)
        y0, y1 = max(int(cy - r - 2), 0), min(int(cy + r + 3), size)
        x0, x1 = max(int(cx - r - 2), 0), min(int(cx + r + 3), size)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        mask = shape_mask(cls, xx - cx, yy - cy, r)
        image[y0:y1, x0:x1][mask] = rng.uniform(60, 200)  # grey: no class has a grey colour


def proxy_recipe_table() -> list[dict[str, Any]]:
    """One row per proxy class: index, name, shape, aspect, colour, texture, context ring, thin."""
    return [{"index": c.index, "name": c.name, "shape": c.shape, "aspect": c.aspect, "colour": c.colour,
             "texture": c.texture, "context_ring": c.ring or "", "thin": c.thin} for c in PROXY_CLASSES]


SPLIT_CODES = {"train": 1, "val": 2, "test": 3}  # the proxy splits, and their code in each image's seed


def _proxy_rng(seed: int, split: str, large: bool, i: int) -> np.random.Generator:
    """The generator proxy image ``i`` of a split is drawn from.

    One place for :func:`proxy_arrays` and the notebooks.
    """
    if split == "test":
        return np.random.default_rng([seed, SPLIT_CODES[split], int(large), i, PROXY_TEST_DRAW])
    return np.random.default_rng([seed, SPLIT_CODES[split], int(large), i])


def _read_cache(path: Path, count: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A cache file's (images, labels), or None (with a warning naming the file) when it is damaged:
    unreadable, of other shapes, or holding a label that is no proxy class (0..20) nor void (255)."""
    import warnings

    try:
        with np.load(path) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        problem = f"cannot be read ({type(err).__name__})"
    else:
        bad = labels[(labels > len(PROXY_CLASSES)) & (labels != IGNORE_INDEX)]
        if images.shape != (count, size, size, 3) or labels.shape != (count, size, size):
            problem = f"holds shapes {images.shape} and {labels.shape}"
        elif bad.size:
            problem = f"holds label {int(bad.flat[0])}, which is no proxy class (0..{len(PROXY_CLASSES)})"
        else:
            return images, labels
    warnings.warn(f"proxy cache {path} {problem}; drawing it again", stacklevel=3)
    return None


def proxy_arrays(split: str, *, size: int, count: int, seed: int = 0, large: bool = False,
                 cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Generate (or load from the cache) ``count`` proxy images: (N, S, S, 3) and (N, S, S) uint8.

    Image ``i`` is drawn from ``np.random.default_rng([seed, split, large, i])``: the same for a
    seed whatever ``count`` is, and different between splits and between the two set sizes.
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown proxy split {split!r}; use one of {', '.join(SPLIT_CODES)}")
    if count < 1:
        raise ValueError(f"proxy count must be at least 1, got {count}")
    recipe = proxy_recipe(split, large)
    key = json.dumps([PROXY_VERSION, PROXY_TEST_DRAW, split, size, count, seed, bool(large),
                      dataclasses.asdict(recipe)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    if cache_dir is None:
        # The shared cache root lives in dlib.data, which imports this module: imported here, not at the top.
        from dlib.core.io import cache_root

        cache_dir = cache_root() / "proxy"
    folder = Path(cache_dir)
    path = folder / f"proxy_{split}{'_large' if large else ''}_s{size}_n{count}_seed{seed}_{digest}.npz"
    if path.exists():
        cached = _read_cache(path, count, size)
        if cached is not None:
            return cached
    images = np.empty((count, size, size, 3), np.uint8)
    labels = np.empty((count, size, size), np.uint8)
    for i in range(count):
        rng = _proxy_rng(seed, split, large, i)
        images[i], labels[i] = make_proxy_sample(rng, size, large=large, split=split)
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=labels)
    atomic_write_bytes(path, buf.getvalue())
    return images, labels


def proxy_object_sizes(cfg, splits: Sequence[str], *, images: int = 150) -> dict[str, list[float]]:
    """Object sizes (half the larger side, as a fraction of the image side) in the first ``images`` images
    of each proxy split, drawn exactly as :func:`proxy_arrays` draws them."""
    size, seed = cfg.data.proxy_image_size, cfg.data.proxy_seed
    out = {}
    for split in splits:
        objects = [o for i in range(images) for o in make_proxy_sample(
            _proxy_rng(seed, split, False, i), size, split=split, return_objects=True)[2]]
        out[split] = [o["size"] / size for o in objects]
    return out


class ProxySegmentation:
    """The built-in proxy data set (see the module docstring). **A proxy, not PASCAL VOC.**

    ``ProxySegmentation("train", size=128, count=600, seed=0)``; ``large=True`` is the larger set
    standing in for MS-COCO. ``count`` defaults to 600 (train), 150 (val) or 1800 (large).
    """

    classes = ("background",) + tuple(c.name for c in PROXY_CLASSES)

    def __init__(self, split: str = "train", *, size: int = 128, count: int | None = None, seed: int = 0,
                 large: bool = False, transform: Callable | None = None,
                 cache_dir: str | os.PathLike | None = None):
        if count is None:
            count = 1800 if large else {"train": 600, "val": 150, "test": 150}.get(split, 150)
        self.split, self.size, self.seed, self.large = split, size, seed, large
        self.images, self.labels = proxy_arrays(split, size=size, count=count, seed=seed, large=large,
                                                cache_dir=cache_dir)
        self.ids = [f"proxy_{split}{'_large' if large else ''}_{i:05d}" for i in range(count)]
        self.transform = transform

    @classmethod
    def from_config(cls, cfg, split: str = "train", *, large: bool = False, transform: Callable | None = None,
                    cache_dir: str | os.PathLike | None = None) -> ProxySegmentation:
        d = cfg.data
        count = d.proxy_large_train if large else (d.proxy_train if split == "train" else d.proxy_val)
        return cls(split, size=d.proxy_image_size, count=count, seed=d.proxy_seed, large=large,
                   transform=transform, cache_dir=cache_dir)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        image, label = self.images[i], self.labels[i]
        return self.transform(image, label) if self.transform is not None else (image, label)

    def __repr__(self) -> str:
        return (f"ProxySegmentation(split={self.split!r}, size={self.size}, count={len(self)}, seed={self.seed}, "
                f"large={self.large})")
