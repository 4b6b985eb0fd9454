"""A ``.caffemodel`` file read without Caffe or protobuf: its layers' names, types and weight arrays.

**File format.** A ``.caffemodel`` is one serialised protobuf message ``NetParameter`` (Caffe's
``src/caffe/proto/caffe.proto``). Only these fields are read; the rest is skipped by wire type:

    NetParameter       layer = 100 (LayerParameter, repeated)      layers = 2 (V1LayerParameter, legacy)
    LayerParameter     name = 1 (string)   type = 2 (string)   blobs = 7 (BlobProto, repeated)
    V1LayerParameter   name = 4 (string)   type = 5 (enum)     blobs = 6 (BlobProto, repeated)
    BlobProto          shape = 7 (BlobShape: dim = 1, packed int64)   data = 5 (packed float)
                       double_data = 8 (packed double)   legacy 4-d num = 1, channels = 2, height = 3, width = 4

The protobuf wire format is parsed here with numpy (:func:`parse_net`): every field starts with a varint key
``field_number << 3 | wire_type``; wire type 0 is a varint, 1 eight bytes, 2 a varint length then that many
bytes (strings, sub-messages, packed repeated numbers), 5 four bytes (an unpacked float). DeepLab-LargeFOV
is stored in the legacy V1 ``layers`` format with 4-d (num, channels, height, width) shapes; the v2 models
use ``layer`` with ``shape``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Legacy V1LayerParameter.LayerType numbers of the layers that carry weights (caffe.proto); DeepLab's Caffe
# fork adds its own (Interp, MatWrite, ...), read as "V1:<number>".
_V1_TYPES = {3: "Concat", 4: "Convolution", 5: "Data", 6: "Dropout", 14: "InnerProduct", 17: "Pooling",
             18: "ReLU", 20: "Softmax", 21: "SoftmaxWithLoss", 22: "Split", 25: "Eltwise", 36: "Silence",
             39: "Deconvolution"}


class CaffeModelError(ValueError):
    """A .caffemodel that cannot be read, or whose blobs do not fit the model."""


class CaffeTruncated(CaffeModelError):
    """The bytes stop inside a field: ``missing`` bytes short of where it should end (0: not known)."""

    def __init__(self, where: str, missing: int = 0):
        super().__init__(where)
        self.where, self.missing = where, missing


# --------------------------------------------------------------------------------------------
# Reading: the protobuf wire format by hand
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaffeLayer:
    """One layer of a caffemodel: its name, type ("Convolution", "BatchNorm", ...) and weight arrays."""

    name: str
    type: str
    blobs: tuple[np.ndarray, ...]


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """(value, next position) of the base-128 varint at ``pos`` (7 bits a byte, low bits first)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise CaffeTruncated("the bytes end inside a number")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CaffeModelError("malformed varint longer than 10 bytes: not a protobuf (caffemodel) file")


def _next_field(buf: memoryview, pos: int) -> tuple[int, int, Any, int, int]:
    """(field number, wire type, value, end of the field, where it should end) of the field at ``pos``; the two
    ends differ when the buffer stops inside the field. Values: an int (wire types 0, 1, 5: raw little-endian
    bits) or a memoryview (wire type 2)."""
    key, pos = _varint(buf, pos)
    number, wire = key >> 3, key & 7
    if wire == 0:
        value, pos = _varint(buf, pos)
        return number, wire, value, pos, pos
    if wire in (1, 5):
        width = 8 if wire == 1 else 4
        return number, wire, int.from_bytes(buf[pos:pos + width], "little"), min(pos + width, len(buf)), pos + width
    if wire == 2:
        size, pos = _varint(buf, pos)
        return number, wire, buf[pos:pos + size], min(pos + size, len(buf)), pos + size
    # 3/4: groups, never used by caffe.proto
    raise CaffeModelError(f"unsupported protobuf wire type {wire} (field {number}): not a caffemodel file")


def _fields(buf: memoryview) -> Iterable[tuple[int, int, Any]]:
    """(field number, wire type, value) of every field of one message (values as :func:`_next_field`)."""
    pos = 0
    while pos < len(buf):
        try:
            number, wire, value, pos, want = _next_field(buf, pos)
        except CaffeTruncated:
            want, number = pos + 1, "?"
        if want > pos:  # inside a complete layer: its own length says otherwise, so the bytes are damaged
            raise CaffeModelError(f"field {number} runs past the end of its message: the file is damaged")
        yield number, wire, value


def _numbers(chunks: list[tuple[int, Any]], dtype: str) -> np.ndarray:
    """A repeated float/double field from its packed (wire type 2) and unpacked (5 or 1) occurrences."""
    parts = []
    width = np.dtype(dtype).itemsize
    for wire, value in chunks:
        if wire == 2:
            if len(value) % width:
                raise CaffeModelError(f"packed {dtype} data of {len(value)} bytes is not a multiple of {width}")
            parts.append(np.frombuffer(value, dtype=dtype))
        else:
            parts.append(np.frombuffer(int(value).to_bytes(width, "little"), dtype=dtype))
    if len(parts) == 1:  # an aligned, writable copy (the file's bytes are not kept; much faster than concatenate)
        return parts[0].astype(dtype)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def _signed(value: int) -> int:
    """int64/int32 fields are varints of their two's complement: values >= 2^63 are negative."""
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_blob(buf: memoryview) -> np.ndarray:
    """A BlobProto as a float32 array of its shape (``shape.dim``, else the legacy num/channels/height/width)."""
    dims: list[int] = []
    legacy: dict[int, int] = {}
    data: list[tuple[int, Any]] = []
    double: list[tuple[int, Any]] = []
    has_shape = False
    for number, wire, value in _fields(buf):
        if number == 7 and wire == 2:  # BlobShape
            has_shape = True
            for n, w, v in _fields(value):
                if n == 1 and w == 2:  # packed int64 dims
                    pos = 0
                    while pos < len(v):
                        d, pos = _varint(v, pos)
                        dims.append(_signed(d))
                elif n == 1 and w == 0:  # unpacked
                    dims.append(_signed(v))
        elif number == 5 and wire in (2, 5):
            data.append((wire, value))
        elif number == 8 and wire in (2, 1):
            double.append((wire, value))
        elif number in (1, 2, 3, 4) and wire == 0:
            legacy[number] = _signed(value)
    values = _numbers(data, "<f4") if data else _numbers(double, "<f8").astype(np.float32)
    shape = tuple(dims) if has_shape else tuple(legacy.get(i, 0) for i in (1, 2, 3, 4))
    if not has_shape and not legacy:
        shape = (len(values),)
    if int(np.prod(shape)) != values.size:
        raise CaffeModelError(f"a blob of shape {shape} holds {values.size} numbers; the file is damaged")
    return values.reshape(shape)


def _parse_layer(buf: memoryview, legacy: bool) -> CaffeLayer:
    name_field, type_field, blob_field = (4, 5, 6) if legacy else (1, 2, 7)
    name, kind, blobs = "", "", []
    for number, wire, value in _fields(buf):
        if number == name_field and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif number == type_field:
            if legacy and wire == 0:
                kind = _V1_TYPES.get(value, f"V1:{value}")
            elif not legacy and wire == 2:
                kind = bytes(value).decode("utf-8", "replace")
        elif number == blob_field and wire == 2:
            blobs.append(parse_blob(value))
    return CaffeLayer(name, kind, tuple(blobs))


def _cut_inside(partial: memoryview, legacy: bool) -> str:
    """Where in a layer's bytes they stop: "layer conv5_2's blob 0" (the blobs before it complete)."""
    name_field, blob_field = (4, 6) if legacy else (1, 7)
    name, blobs, pos, stopped_in = "", 0, 0, None
    try:
        while pos < len(partial):
            number, wire, value, pos, want = _next_field(partial, pos)
            if want > pos:
                stopped_in = number
                break
            if number == name_field and wire == 2:
                name = bytes(value).decode("utf-8", "replace")
            blobs += number == blob_field and wire == 2
    except CaffeTruncated:
        pass
    label = f"layer {name}" if name else "a layer whose name was not reached"
    if stopped_in == blob_field:
        return f"{label}'s blob {blobs}"
    return f"{label}, after {blobs} complete blob{'s' if blobs != 1 else ''}"


def parse_net(data: bytes | bytearray | memoryview) -> list[CaffeLayer]:
    """Every layer of a serialised NetParameter (``layer`` = 100 and legacy ``layers`` = 2), in file order.

    Bytes that stop inside a layer raise :class:`CaffeTruncated` saying which layer (and blob) and how many
    bytes that layer still needed.
    """
    buf = memoryview(data).cast("B")
    layers: list[CaffeLayer] = []
    pos = 0
    while pos < len(buf):
        after = f"after layer {layers[-1].name}" if layers else "before its first layer"
        try:
            number, wire, value, pos, want = _next_field(buf, pos)
        except CaffeTruncated:
            raise CaffeTruncated(f"ends {after}, inside the next layer's header") from None
        if want > pos:
            inside = _cut_inside(value, legacy=number == 2) if number in (100, 2) and wire == 2 else "a field"
            raise CaffeTruncated(f"ends inside {inside}", want - pos)
        if number in (100, 2) and wire == 2:
            layers.append(_parse_layer(value, legacy=number == 2))
    return layers


def read_caffemodel(path: str | os.PathLike) -> list[CaffeLayer]:
    """The layers of a ``.caffemodel`` file (names, types, blobs as float32 arrays).

    Errors name the file: "FILE is truncated (ends inside layer conv5_2's blob 0; expected N bytes more):
    download it again", "FILE is not a readable caffemodel (...)".
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caffemodel {str(path)!r} does not exist; the released DeepLab models are listed in "
                                "the README section 'Replicate in minutes'")
    try:
        layers = parse_net(path.read_bytes())
    except CaffeTruncated as err:
        more = f"; expected {err.missing:,} bytes more" if err.missing else ""
        raise CaffeTruncated(f"{path} is truncated ({err.where}{more}): download it again", err.missing) from None
    except CaffeModelError as err:
        raise CaffeModelError(f"{path} is not a readable caffemodel ({err}): download it again") from None
    if not any(layer.blobs for layer in layers):
        raise CaffeModelError(f"{path} holds no layer with weights: is it a .caffemodel (not a .prototxt or a "
                              "solverstate)?")
    return layers
