"""dlib.nets.caffe_proto: the .caffemodel reader against files written by an independent protobuf writer
(tests/caffemodel_writer.py, also used by test_caffe and bench/caffe_check.py)."""

import numpy as np
import pytest
from caffemodel_writer import encode, rand, write_net  # the independent writer

from dlib.nets import caffe_proto

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
