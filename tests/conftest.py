import http.server
import os
import socket
import threading

import pytest

# Keep tests on two cores predictable, and never write into the repository's results/.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_RESULTS_DIR", str(tmp_path / "results"))
    yield


@pytest.fixture
def two_halves():
    """A hand-made CRF case (tests of dlib.crf and dlib.crf.tuning): left half red = class 0, right half
    blue = class 1; the unary gives the true class 0.7, but 0.4 at four 'salt' pixels. (image, probs, truth)."""
    import numpy as np

    h, w = 10, 12
    truth = np.zeros((h, w), np.int64)
    truth[:, 6:] = 1
    image = np.zeros((h, w, 3), np.uint8)
    image[truth == 0] = (200, 30, 30)
    image[truth == 1] = (30, 30, 200)
    p_true = np.full((h, w), 0.7)
    for r, c in [(2, 2), (7, 3), (4, 9), (8, 10)]:
        p_true[r, c] = 0.4
    probs = np.stack([np.where(truth == 0, p_true, 1 - p_true), np.where(truth == 1, p_true, 1 - p_true)])
    return image, probs.astype(np.float32), truth


@pytest.fixture(scope="module")
def model():
    """A small ResNet-ASPP of 3 classes in eval mode (tests of dlib.nets.msc and dlib.training.loss)."""
    import torch

    from dlib.nets import models

    torch.manual_seed(0)
    return models.build("small_resnet_aspp", num_classes=3).eval()

# ---- a local HTTP server (tests of dlib.tools.download and dlib.tools.fetch): Range requests, and a connection that
# drops
# after N bytes the first time. Never the internet.

class _Server:
    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before closing, on the first request only
        self.ranges: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.ranges.append((self.path, self.headers.get("Range")))
                body = owner.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = owner.drop_after.pop(self.path, None)
                self.wfile.write(body[start:] if cut is None else body[start:start + cut])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()
