"""An independent .caffemodel writer for the tests (test_caffe_proto, test_caffe) and the benchmarks
(bench/caffe_check.py): a message description taken from Caffe's caffe.proto and a generic protobuf encoder,
sharing no code with dlib.nets.caffe_proto. Plain numpy and struct, so it imports where pytest is not installed."""

import struct
from pathlib import Path

import numpy as np

# message -> field -> (number, kind); kinds: string, varint, message:<Name>, packed_float, packed_double,
# packed_varint, float (unpacked, wire type 5), double (unpacked, wire type 1).
SCHEMA = {
    "NetParameter": {"name": (1, "string"), "layers": (2, "message:V1LayerParameter"),
                     "layer": (100, "message:LayerParameter")},
    "LayerParameter": {"name": (1, "string"), "type": (2, "string"), "bottom": (3, "string"),
                       "blobs": (7, "message:BlobProto"), "phase": (10, "varint")},
    "V1LayerParameter": {"bottom": (2, "string"), "name": (4, "string"), "type": (5, "varint"),
                         "blobs": (6, "message:BlobProto")},
    "BlobProto": {"num": (1, "varint"), "channels": (2, "varint"), "height": (3, "varint"), "width": (4, "varint"),
                  "data": (5, "packed_float"), "data_unpacked": (5, "float"), "shape": (7, "message:BlobShape"),
                  "double_data": (8, "packed_double"), "double_unpacked": (8, "double")},
    "BlobShape": {"dim": (1, "packed_varint")},
}
WIRE = {"string": 2, "varint": 0, "packed_float": 2, "packed_double": 2, "packed_varint": 2, "float": 5, "double": 1}


def _vint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode(message: str, values: dict) -> bytes:
    """Serialise ``values`` (field name -> value or list of values) as protobuf message ``message``."""
    out = bytearray()
    for name, value in values.items():
        number, kind = SCHEMA[message][name]
        items = value if isinstance(value, list) and not kind.startswith("packed") else [value]
        for item in items:
            wire = 2 if kind.startswith("message:") else WIRE[kind]
            out += _vint(number << 3 | wire)
            if kind.startswith("message:"):
                body = encode(kind.split(":")[1], item)
            elif kind == "string":
                body = item.encode()
            elif kind == "varint":
                out += _vint(item)
                continue
            elif kind == "float":
                out += struct.pack("<f", item)
                continue
            elif kind == "double":
                out += struct.pack("<d", item)
                continue
            elif kind == "packed_float" and isinstance(item, np.ndarray):  # large blobs: little-endian float32 bytes
                body = item.astype("<f4").tobytes()
            elif kind == "packed_float":
                body = struct.pack(f"<{len(item)}f", *item)
            elif kind == "packed_double":
                body = struct.pack(f"<{len(item)}d", *item)
            else:  # packed_varint
                body = b"".join(_vint(v) for v in item)
            out += _vint(len(body)) + body
    return bytes(out)


def blob(a: np.ndarray, *, legacy: bool = False) -> dict:
    """A BlobProto description: ``shape`` (new) or num/channels/height/width (legacy, padded with 1s to 4-d)."""
    a = np.asarray(a, dtype=np.float32)
    flat = [float(v) for v in a.reshape(-1)] if a.size < 10_000 else a.reshape(-1)
    if legacy:
        n, c, h, w = (1,) * (4 - a.ndim) + a.shape
        return {"num": n, "channels": c, "height": h, "width": w, "data": flat}
    return {"shape": {"dim": list(a.shape)}, "data": flat}


def write_net(path: Path, layers: list[tuple[str, str, list[np.ndarray]]], *, legacy: bool = False) -> Path:
    """A caffemodel of (name, type, blobs) layers: new ``layer`` format, or V1 ``layers`` with 4-d shapes."""
    v1_types = {"Convolution": 4, "ReLU": 18, "Pooling": 17}
    if legacy:
        body = {"name": "test", "layers": [{"bottom": "data", "name": n, "type": v1_types[t],
                                           "blobs": [blob(b, legacy=True) for b in bs]} for n, t, bs in layers]}
    else:
        body = {"name": "test", "layer": [{"name": n, "type": t, "bottom": "data", "phase": 1,
                                          "blobs": [blob(b) for b in bs]} for n, t, bs in layers]}
    path.write_bytes(encode("NetParameter", body))
    return path


def rand(rng, *shape, positive=False):
    a = rng.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a
