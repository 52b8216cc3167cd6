"""The files a card links, served by revision from the verified snapshot: images and text
typed for a browser that must run none of them, everything else refused with its reason."""

from __future__ import annotations

import io
import os
import shutil

import httpx
import pytest

from loradock.serving.http.card_files import MAX_FILE_BYTES
from tests.helpers.serving import API_KEY, BASE_ID, publish_fixture_registry, start_server

REPO = "acme/adapter-000"
ROUTE = f"/v1/registry/adapters/{REPO}/files"


def _png(width: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (width, 8), color=128).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def files_server(tmp_path_factory, serving_base):
    """Two revisions of one adapter: the newer adds a loss plot of another width, a text
    file, an SVG, an HTML page and an image over the size limit."""
    from loradock.registry.card import build_adapter_card

    root = tmp_path_factory.mktemp("card-files")
    pub = publish_fixture_registry(root, serving_base, serving_base.parent / "adapter", n=2)
    folder = root / "with-files"
    shutil.copytree(serving_base.parent / "adapter", folder)
    (folder / "training_loss.png").write_bytes(_png(24))
    card = build_adapter_card(base_model=BASE_ID, task="json")
    old = pub.registry.publish(folder, REPO, card=card).sha
    (folder / "training_loss.png").write_bytes(_png(40))
    (folder / "notes.txt").write_text("<script>alert(1)</script>")
    (folder / "evil.svg").write_text('<svg onload="alert(1)"/>')
    (folder / "page.html").write_text("<script>alert(1)</script>")
    (folder / "big.png").write_bytes(b"\x89PNG" + b"0" * MAX_FILE_BYTES)
    new = pub.registry.publish(folder, REPO, card=card).sha
    server, _ = start_server("peft", pub, max_model_len=64)
    try:
        yield server.url, pub, {"old": old, "new": new}
    finally:
        server.stop()


def _get(url: str, path: str, revision: str | None = None) -> httpx.Response:
    params = {"revision": revision} if revision else None
    headers = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.get(f"{url}{ROUTE}/{path}", params=params, headers=headers, timeout=60)


# (id, path, revision, status, media type or fragment of the refusal, image width)
CASES = [
    ("plot-latest", "training_loss.png", None, 200, "image/png", 40),
    ("plot-new", "training_loss.png", "new", 200, "image/png", 40),
    ("plot-old", "training_loss.png", "old", 200, "image/png", 24),
    ("text", "notes.txt", "new", 200, "text/plain; charset=utf-8", None),
    ("card", "README.md", "new", 200, "text/markdown; charset=utf-8", None),
    ("not-at-revision", "notes.txt", "old", 404, "has no file 'notes.txt'", None),
    ("svg", "evil.svg", "new", 400, "only images and text", None),
    ("html", "page.html", "new", 400, "only images and text", None),
    ("weights", "adapter_model.safetensors", "new", 400, "only images and text", None),
    ("too-big", "big.png", "new", 400, f"over the {MAX_FILE_BYTES}-byte limit", None),
    ("marker", ".loradock-snapshot.json", "new", 400, "not a file path of the repo", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "revision", "status", "expected", "width"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_card_files_by_revision(files_server, path, revision, status, expected, width):
    from PIL import Image

    url, _, shas = files_server
    resp = _get(url, path, shas.get(revision))
    assert resp.status_code == status, resp.text[:300]
    if status != 200:
        assert expected in resp.json()["error"]["message"]
        return
    assert resp.headers["content-type"] == expected
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in resp.headers["content-security-policy"]
    disposition = "inline" if expected.startswith("image/") else "attachment"
    assert resp.headers["content-disposition"] == f'{disposition}; filename="{path}"'
    if width is not None:
        assert Image.open(io.BytesIO(resp.content)).width == width


def test_a_link_planted_in_the_snapshot_is_not_followed(files_server, tmp_path):
    url, pub, shas = files_server
    assert _get(url, "notes.txt", shas["new"]).status_code == 200  # now in the snapshot
    served = pub.registry.snapshots.path_for(REPO, shas["new"]) / "notes.txt"
    # A secret of the same size and time as the verified file, so the snapshot's own check
    # (size and mtime) still passes: only the route's refusal of links stands in the way.
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"S" * served.stat().st_size)
    mtime = served.stat().st_mtime_ns
    os.utime(secret, ns=(mtime, mtime))
    served.unlink()
    served.symlink_to(secret)
    resp = _get(url, "notes.txt", shas["new"])
    assert (resp.status_code, "SSS" in resp.text) == (400, False), resp.text[:300]
    assert "is a link" in resp.json()["error"]["message"]
