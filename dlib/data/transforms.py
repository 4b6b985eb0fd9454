"""The papers' data augmentation and input normalisation, on numpy arrays.

Training (DeepLab v2, Sec. 4.1 and Table 4 "Aug"): random scale in [0.5, 1.5], pad to the crop
size (image with the mean colour, label with 255 = void), random 321x321 crop, random horizontal
flip, then mean/std normalisation. Evaluation: the whole image, normalised, optionally padded to
513x513 (the `gpu` profile; the padding is cropped off the prediction again).

Every random transform draws from an explicit ``np.random.Generator``; the training loop seeds one
per sample from (seed, position in the sample stream), so augmentation is the same whatever the
number of loader workers or processes, and a resumed run sees the same crops as an uninterrupted one.
Labels are only ever resized with nearest neighbour, so no transform creates a new label value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from dlib.core.constants import IGNORE_INDEX

# DeepLab's released Caffe models (prototxt transform_param mean_value): B, G, R means on the 0-255 scale.
CAFFE_MEAN_BGR = (104.008, 116.669, 122.675)
INPUT_CONVENTIONS = ("imagenet", "caffe")


def resize(image: np.ndarray, label: np.ndarray | None, scale: float):
    """Resize by ``scale``: image bilinear, label nearest neighbour. Sizes round to the nearest pixel."""
    h, w = image.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return image, label
    image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    if label is not None:
        label = np.asarray(Image.fromarray(label).resize((nw, nh), Image.NEAREST))
    return image, label


def pad_to(image: np.ndarray, label: np.ndarray | None, size: int | tuple[int, int],
           fill: Sequence[float] = (0, 0, 0), label_fill: int = IGNORE_INDEX):
    """Pad bottom/right to at least ``size`` (h, w): image with ``fill`` (RGB, 0-255), label with void."""
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = image.shape[:2]
    ph, pw = max(th - h, 0), max(tw - w, 0)
    if ph == 0 and pw == 0:
        return image, label
    out = np.empty((h + ph, w + pw, 3), dtype=image.dtype)
    out[...] = np.asarray(fill, dtype=np.float64).round().astype(image.dtype)
    out[:h, :w] = image
    if label is not None:
        lab = np.full((h + ph, w + pw), label_fill, dtype=label.dtype)
        lab[:h, :w] = label
        label = lab
    return out, label


def random_crop(image: np.ndarray, label: np.ndarray, size: int, rng: np.random.Generator,
                fill: Sequence[float] = (0, 0, 0)):
    """Pad (image with ``fill``, label with void) to ``size`` if smaller, then crop ``size`` x ``size`` at random."""
    image, label = pad_to(image, label, size, fill)
    h, w = label.shape
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return image[y:y + size, x:x + size], label[y:y + size, x:x + size]


def hflip(image: np.ndarray, label: np.ndarray | None):
    return image[:, ::-1], (label[:, ::-1] if label is not None else None)


def to_tensor(image: np.ndarray, label: np.ndarray | None, mean: Sequence[float], std: Sequence[float], *,
              bgr: bool = False):
    """uint8 RGB (H, W, 3) -> float32 (3, H, W), (x/255 - mean)/std (mean, std in RGB order), channels
    reversed to B, G, R when ``bgr``; label -> int64 (H, W)."""
    x = torch.from_numpy(_writable(image)).permute(2, 0, 1).float().div_(255)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    if bgr:
        x = x.flip(0)
    y = torch.from_numpy(_writable(label)).long() if label is not None else None
    return x, y


def normalisation(data_cfg) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """(mean, std, bgr) for :func:`to_tensor` from the data config's ``input_convention``.

    "imagenet": ``data.mean``/``data.std``, RGB. "caffe" (DeepLab's released models): x - CAFFE_MEAN_BGR on the
    0-255 scale in B, G, R order, written as mean = CAFFE_MEAN/255 and std = 1/255 in RGB order, then reversed.
    """
    convention = getattr(data_cfg, "input_convention", "imagenet")
    if convention == "imagenet":
        return tuple(data_cfg.mean), tuple(data_cfg.std), False
    if convention == "caffe":
        return tuple(m / 255 for m in CAFFE_MEAN_BGR[::-1]), (1 / 255,) * 3, True
    raise ValueError(f"data.input_convention must be one of {', '.join(INPUT_CONVENTIONS)}, got {convention!r}")


def _writable(a: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable array (torch.from_numpy needs one); copies only when necessary."""
    a = np.ascontiguousarray(a)
    return a if a.flags.writeable else a.copy()


class TrainTransform:
    """Random scale, pad + random crop, random flip, normalisation (DeepLab v2, Sec. 4.1)."""

    def __init__(self, *, crop_size: int = 321, scale_range: tuple[float, float] | None = (0.5, 1.5),
                 flip: bool = True, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), bgr: bool = False):
        if crop_size < 1:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        if scale_range is not None and not (0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        self.crop_size, self.scale_range, self.flip = crop_size, scale_range, flip
        self.mean, self.std, self.bgr = tuple(mean), tuple(std), bgr
        self.fill = tuple(255 * m for m in self.mean)  # pad with the mean: zero after normalisation

    @classmethod
    def from_config(cls, cfg) -> TrainTransform:
        d = cfg.data
        mean, std, bgr = normalisation(d)
        return cls(crop_size=d.crop_size, scale_range=tuple(d.scale_range) if d.scale_aug else None,
                   flip=d.flip, mean=mean, std=std, bgr=bgr)

    def augment(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        """The random geometry only, on uint8 arrays: returns (image, label) of size crop x crop."""
        if self.scale_range is not None:
            image, label = resize(image, label, float(rng.uniform(*self.scale_range)))
        image, label = random_crop(image, label, self.crop_size, rng, self.fill)
        if self.flip and rng.random() < 0.5:
            image, label = hflip(image, label)
        return image, label

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        image, label = self.augment(image, label, rng)
        return to_tensor(image, label, self.mean, self.std, bgr=self.bgr)
