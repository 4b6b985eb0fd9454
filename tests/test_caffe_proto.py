"""dlib.caffe_proto: the .caffemodel reader against files written by an independent protobuf writer (also used
by test_caffe to write the files it loads)."""

import struct
from pathlib import Path

import numpy as np
import pytest

from dlib import caffe_proto

# ------------------------------------------------------------------------------------------------
# An independent protobuf writer: a message description (from caffe.proto) and a generic encoder.
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Reader
# ------------------------------------------------------------------------------------------------

def test_reader_returns_the_arrays_of_both_layer_formats(tmp_path):
    rng = np.random.default_rng(0)
    w, mean, var = rand(rng, 4, 3, 3, 3), rand(rng, 4), rand(rng, 4, positive=True)
    gamma, beta = rand(rng, 4), rand(rng, 4)
    factor = np.array([3.0], np.float32)
    new = write_net(tmp_path / "new.caffemodel", [("conv1", "Convolution", [w]), ("relu", "ReLU", []),
                                                  ("bn_conv1", "BatchNorm", [mean, var, factor]),
                                                  ("scale_conv1", "Scale", [gamma, beta])])
    layers = caffe_proto.read_caffemodel(new)
    assert [(layer.name, layer.type, len(layer.blobs)) for layer in layers] == [
        ("conv1", "Convolution", 1), ("relu", "ReLU", 0), ("bn_conv1", "BatchNorm", 3), ("scale_conv1", "Scale", 2)]
    for got, want in zip(layers[0].blobs + layers[2].blobs + layers[3].blobs, [w, mean, var, factor, gamma, beta]):
        assert got.dtype == np.float32 and got.shape == want.shape and np.array_equal(got, want)

    bias = rand(rng, 4)
    old = write_net(tmp_path / "v1.caffemodel", [("fc6", "Convolution", [w, bias]), ("pool5", "Pooling", [])],
                    legacy=True)
    fc6, pool5 = caffe_proto.read_caffemodel(old)
    assert (fc6.name, fc6.type, pool5.type) == ("fc6", "Convolution", "Pooling")
    assert fc6.blobs[0].shape == (4, 3, 3, 3) and np.array_equal(fc6.blobs[0], w)
    assert fc6.blobs[1].shape == (1, 1, 1, 4) and np.array_equal(fc6.blobs[1].reshape(-1), bias)


def test_reader_takes_unpacked_floats_and_doubles(tmp_path):
    body = {"layer": [{"name": "a", "type": "Scale", "blobs": [
        {"shape": {"dim": [2]}, "data_unpacked": [1.5, -2.25]},
        {"shape": {"dim": [3]}, "double_data": [0.1, 0.2, 0.3]},
        {"shape": {"dim": [1]}, "double_unpacked": [7.0]}]}]}
    (path := tmp_path / "u.caffemodel").write_bytes(encode("NetParameter", body))
    (layer,) = caffe_proto.read_caffemodel(path)
    assert layer.blobs[0].tolist() == [1.5, -2.25]
    assert np.array_equal(layer.blobs[1], np.array([0.1, 0.2, 0.3], np.float32)) and layer.blobs[2].tolist() == [7.0]


def test_truncated_or_empty_files_are_clear_errors(tmp_path):
    path = write_net(tmp_path / "t.caffemodel", [("conv1", "Convolution", [np.ones((2, 3), np.float32)])])
    (cut := tmp_path / "cut.caffemodel").write_bytes(path.read_bytes()[:-5])
    with pytest.raises(caffe_proto.CaffeModelError, match="truncated|damaged|past the end"):
        caffe_proto.read_caffemodel(cut)
    (empty := tmp_path / "e.caffemodel").write_bytes(encode("NetParameter", {"name": "x"}))
    with pytest.raises(caffe_proto.CaffeModelError, match="no layer with weights"):
        caffe_proto.read_caffemodel(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        caffe_proto.read_caffemodel(tmp_path / "absent.caffemodel")


@pytest.mark.parametrize("legacy", [False, True])
def test_a_file_cut_inside_a_blob_names_the_file_the_layer_the_blob_and_the_missing_bytes(tmp_path, legacy):
    rng = np.random.default_rng(4)
    layers = [("conv5_1", "Convolution", [rand(rng, 8, 4, 3, 3), rand(rng, 8)]),
              ("conv5_2", "Convolution", [rand(rng, 8, 8, 3, 3), rand(rng, 8)])]
    whole = write_net(tmp_path / "whole.caffemodel", layers, legacy=legacy).read_bytes()
    bias = np.asarray(layers[1][2][1], "<f4").tobytes()
    weights = np.asarray(layers[1][2][0], "<f4").tobytes()
    cases = {"blob 1": whole.rindex(bias) + 5,  # inside conv5_2's bias, the file's last bytes
             "blob 0": whole.index(weights) + 100}  # inside conv5_2's weights
    for blob, cut in cases.items():
        (path := tmp_path / f"cut_{blob[-1]}.caffemodel").write_bytes(whole[:cut])
        with pytest.raises(caffe_proto.CaffeModelError) as err:
            caffe_proto.read_caffemodel(path)
        # conv5_2 is the last layer: it still needed every byte the cut took away
        assert str(err.value) == (f"{path} is truncated (ends inside layer conv5_2's {blob}; expected "
                                  f"{len(whole) - cut:,} bytes more): download it again")
        assert "\n" not in str(err.value)


def test_a_file_cut_between_a_layers_fields_or_in_its_header_says_so(tmp_path):
    rng = np.random.default_rng(5)
    whole = write_net(tmp_path / "w.caffemodel", [("conv1", "Convolution", [rand(rng, 2, 3)]),
                                                  ("fc8", "Convolution", [rand(rng, 2, 3)])]).read_bytes()
    second = whole.index(b"fc8") - 4  # NetParameter.layer key (2 bytes: field 100), length, name key, name length
    (head := tmp_path / "h.caffemodel").write_bytes(whole[:second + 1])  # inside the second layer's key
    with pytest.raises(caffe_proto.CaffeModelError, match=r"h.caffemodel is truncated \(ends after layer conv1, "
                                                          r"inside the next layer's header\): download it again"):
        caffe_proto.read_caffemodel(head)
    (named := tmp_path / "n.caffemodel").write_bytes(whole[:whole.index(b"fc8") + 3])  # name read, no blob yet
    with pytest.raises(caffe_proto.CaffeModelError, match=r"ends inside layer fc8, after 0 complete blobs; expected"):
        caffe_proto.read_caffemodel(named)
