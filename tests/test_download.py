"""python -m dlib download: against a local HTTP server (tests/conftest.py), with miniature archives made here.

Never the internet. The server speaks HTTP Range and can drop the connection part-way (an interrupted
transfer); checksums are computed here with hashlib, independently of dlib.tools.download.
"""

import dataclasses
import hashlib
import io
import json
import socket
import zipfile

import numpy as np
import pytest
from archives import SBD_LABELS, SBD_TRAIN, SBD_VAL, VOC_TRAIN, VOC_VAL, jpeg, sbd_tgz, voc_tar
from PIL import Image

from dlib.data import voc as dlib_voc
from dlib.tools import download, fetch
from dlib.tools.cli import main


def _serve(server, monkeypatch, attr, path, body, **checksums):
    """Serve ``body`` at ``path`` and point dlib.tools.download.<attr> at it, with the given (or the right) md5."""
    server.files[path] = body
    resource = dataclasses.replace(getattr(download, attr), url=server.url(path),
                                   md5=checksums.get("md5", hashlib.md5(body).hexdigest()))
    monkeypatch.setattr(download, attr, resource)
    return resource


# ---- download, verify, extract, build train_aug --------------------------------------------------------

def test_voc_and_sbd_download_verify_extract_and_build_train_aug(server, monkeypatch, tmp_path, capsys):
    _serve(server, monkeypatch, "VOC", "/voc.tar", voc_tar())
    _serve(server, monkeypatch, "SBD", "/benchmark.tgz", sbd_tgz())
    root = tmp_path / "data"
    assert main(["download", "voc", "--root", str(root), "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["voc_root"] == str(root / "VOCdevkit") and out["sbd_root"] is None and "download sbd" in out["next"]
    voc = root / "VOCdevkit" / "VOC2012"
    assert (voc / "JPEGImages" / "2007_000001.jpg").read_bytes() == jpeg(2, 2)
    assert not (voc / "ImageSets" / "Segmentation" / "train_aug.txt").exists()  # needs SBD

    assert main(["download", "sbd", "--root", str(root), "--no-progress"]) == 0
    # train_aug by hand: SBD train+val plus VOC train, minus VOC val
    expected = sorted((set(SBD_TRAIN) | set(SBD_VAL) | set(VOC_TRAIN)) - set(VOC_VAL))
    assert (voc / "ImageSets" / "Segmentation" / "train_aug.txt").read_text().split() == expected
    # every .mat converted to an index-coded PNG holding the same values
    for name, label in SBD_LABELS.items():
        png = root / "benchmark_RELEASE" / "dataset" / dlib_voc.SBD_PNG_DIR / f"{name}.png"
        with Image.open(png) as im:
            assert im.mode == "P" and np.array_equal(np.asarray(im), label)
    # the loader reads that layout: VOC's own label where it exists, else SBD's converted one
    ds = dlib_voc.VOCSegmentation(root / "VOCdevkit", "train_aug", sbd_root=root / "benchmark_RELEASE")
    assert ds.ids == expected
    source = ds.label_source("2008_000010")
    assert source.suffix == ".png" and "SegmentationClassAug" in str(source)
    assert np.array_equal(ds[ds.ids.index("2008_000010")][1], SBD_LABELS["2008_000010"])
    assert ds.label_source("2007_000001").parent.name == "SegmentationClass"
    # a second run finds everything in place: nothing is fetched again
    before = len(server.ranges)
    assert main(["download", "voc", "--root", str(root), "--no-progress"]) == 0
    assert len(server.ranges) == before


def test_a_wrong_checksum_is_refused_and_nothing_is_extracted(server, monkeypatch, tmp_path):
    _serve(server, monkeypatch, "VOC", "/voc.tar", voc_tar(), md5="0" * 32)
    with pytest.raises(fetch.DownloadError, match=r"md5 .* published with 0{32}.*nothing was extracted"):
        download.download_voc(tmp_path, progress=False)
    assert not (tmp_path / "VOCdevkit").exists()
    assert not (tmp_path / "downloads" / "VOCtrainval_11-May-2012.tar").exists()  # the bad download is deleted


def test_a_dropped_connection_is_resumed_within_one_call(server, monkeypatch, tmp_path):
    resource = _serve(server, monkeypatch, "SBD", "/benchmark.tgz", sbd_tgz())
    server.drop_after["/benchmark.tgz"] = 57
    download.download_sbd(tmp_path, progress=False, backoff=0)
    assert [r for p, r in server.ranges if p == "/benchmark.tgz"] == [None, "bytes=57-"]
    assert hashlib.md5((tmp_path / "downloads" / "benchmark.tgz").read_bytes()).hexdigest() == resource.md5
    assert (tmp_path / "benchmark_RELEASE" / "dataset" / "cls" / "2008_000010.mat").is_file()


def test_no_network_is_one_clear_line_naming_the_address_and_from_file(monkeypatch, tmp_path, capsys):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setattr(download, "VOC", dataclasses.replace(download.VOC, url=f"http://127.0.0.1:{port}/voc.tar"))
    assert main(["download", "voc", "--root", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"http://127.0.0.1:{port}/voc.tar" in err and "download voc --from-file PATH" in err


def test_from_file_verifies_and_extracts_a_hand_fetched_archive(monkeypatch, tmp_path):
    body = voc_tar()
    monkeypatch.setattr(download, "VOC", dataclasses.replace(download.VOC, url="http://unused.invalid/voc.tar",
                                                             md5=hashlib.md5(body).hexdigest()))
    wrong = tmp_path / "wrong.tar"
    wrong.write_bytes(body[:-512] + b"\0" * 512 + b"x")
    with pytest.raises(fetch.DownloadError, match="md5"):
        download.download_voc(tmp_path / "a", from_file=wrong, progress=False)
    assert wrong.exists() and not (tmp_path / "a" / "VOCdevkit").exists()  # the user's file is never deleted
    good = tmp_path / "VOCtrainval_11-May-2012.tar"
    good.write_bytes(body)
    download.download_voc(tmp_path / "a", from_file=good, progress=False)
    val = tmp_path / "a" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    assert val.read_text().split() == VOC_VAL


# ---- weights -----------------------------------------------------------------------------------------

def test_caffe_model_is_fetched_extracted_and_its_sha256_recorded(server, monkeypatch, tmp_path):
    from dlib.tools import doctor

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("init.caffemodel", b"\x0a\x03abc")
        zf.writestr("test.prototxt", "name: 'x'")
    body = buf.getvalue()
    server.files["/model.zip"] = body
    name = "deeplab_v2_resnet101_caffe"
    monkeypatch.setitem(download.CAFFE_MODELS, name,
                        dataclasses.replace(download.CAFFE_MODELS[name], url=server.url("/model.zip")))
    assert download.CAFFE_MODELS[name].md5 is None and download.CAFFE_MODELS[name].sha256 is None  # none published
    download.download_weights([name], tmp_path, progress=False)
    assert (tmp_path / name / "init.caffemodel").read_bytes() == b"\x0a\x03abc"
    sums = json.loads((tmp_path / download.CHECKSUMS_FILE).read_text())
    assert sums[f"{name}/init.caffemodel"] == hashlib.sha256(b"\x0a\x03abc").hexdigest()
    assert sums[f"downloads/{download.CAFFE_MODELS[name].filename}"] == hashlib.sha256(body).hexdigest()
    assert doctor._caffe_checks(tmp_path)[0].ok
    (tmp_path / name / "init.caffemodel").write_bytes(b"\x0a\x03abd")  # damaged later
    check = doctor._caffe_checks(tmp_path)[0]
    assert not check.ok and f"{name}/init.caffemodel" in check.detail


def test_imagenet_weights_without_network_name_the_address_and_from_file(monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(fetch.DownloadError, match=r"resnet101-63fe2227\.pth .*--only resnet101_imagenet "
                                                     r"--from-file PATH"):
        download.download_weights(["resnet101_imagenet"], tmp_path, progress=False)
    fake = tmp_path / "resnet101.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(fetch.DownloadError, match="sha256 does not start with 63fe2227"):
        download.download_weights(["resnet101_imagenet"], tmp_path, from_file=fake, progress=False)
