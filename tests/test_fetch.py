"""dlib.tools.fetch: resumable HTTP transfers against a local server (tests/conftest.py), and archive extraction that
refuses members pointing outside the target."""

import hashlib
import io
import tarfile
import zipfile

import pytest
from archives import sbd_tgz  # a miniature SBD archive

from dlib.tools import fetch


def test_an_interrupted_transfer_resumes_with_a_range_request(server, monkeypatch, tmp_path):
    body = sbd_tgz()
    server.files["/b.tgz"] = body
    server.drop_after["/b.tgz"] = 100
    dest = tmp_path / "b.tgz"
    with pytest.raises(fetch.DownloadError, match="100 bytes kept in .*run again to continue"):
        fetch.fetch(server.url("/b.tgz"), dest, retries=0, progress=False)
    assert (tmp_path / "b.tgz.part").stat().st_size == 100 and not dest.exists()
    fetch.fetch(server.url("/b.tgz"), dest, retries=0, progress=False)  # the next call continues
    assert server.ranges[-1] == ("/b.tgz", "bytes=100-")
    assert hashlib.md5(dest.read_bytes()).hexdigest() == hashlib.md5(body).hexdigest()
    assert not (tmp_path / "b.tgz.part").exists()


def _tar_with(info: tarfile.TarInfo, content: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ok = tarfile.TarInfo("fine.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))  # a harmless member first: it must not be written either
        info.size = len(content) if info.isfile() else 0
        tf.addfile(info, io.BytesIO(content) if info.isfile() else None)
    return buf.getvalue()


def _link(name, target, kind):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, why", [
    (tarfile.TarInfo("../x"), "outside the target folder"),
    (tarfile.TarInfo("a/../../x"), "outside the target folder"),
    (tarfile.TarInfo("/abs"), "outside the target folder"),
    (_link("link", "../../outside", tarfile.SYMTYPE), "link to '../../outside'"),
    (_link("link", "/etc/passwd", tarfile.SYMTYPE), "link to '/etc/passwd'"),
    (_link("a/link", "../../x", tarfile.SYMTYPE), "link to"),
    (_link("hard", "../x", tarfile.LNKTYPE), "link to '../x'"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-abs", "nested-symlink-out", "hardlink-out"])
def test_archive_members_outside_the_target_are_refused(tmp_path, member, why):
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tar_with(member, b"pwned"))
    target = tmp_path / "deep" / "target"
    with pytest.raises(fetch.DownloadError, match=why):
        fetch.safe_extract(archive, target)
    assert list(target.iterdir()) == []  # refused before anything was written
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()


def test_zip_members_outside_the_target_and_zip_symlinks_are_refused(tmp_path):
    for name, attr in (("../x", 0o100644), ("/abs", 0o100644), ("link", 0o120777)):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("fine.txt", "ok")
            info = zipfile.ZipInfo(name)
            info.external_attr = attr << 16
            zf.writestr(info, "../../outside")
        (tmp_path / "evil.zip").write_bytes(buf.getvalue())
        target = tmp_path / "t" / name.strip("/.")
        with pytest.raises(fetch.DownloadError, match="outside the target folder|symbolic link"):
            fetch.safe_extract(tmp_path / "evil.zip", target)
        assert list(target.iterdir()) == []


def test_links_that_stay_inside_are_extracted(tmp_path):
    archive = tmp_path / "ok.tar"
    archive.write_bytes(_tar_with(_link("dir/link", "../fine.txt", tarfile.SYMTYPE)))
    fetch.safe_extract(archive, tmp_path / "t")
    assert (tmp_path / "t" / "dir" / "link").read_text() == "ok"
