"""Real XMPP servers hand out slots, a real XMPP client (slixmpp) logs in, finds
the upload service and requests them, and upslot takes and serves the files.

One row per way of signing that is in use:

| server   | module                                  | scheme |
|----------|-----------------------------------------|--------|
| Prosody  | mod_http_upload_external                | v1     |
| Prosody  | mod_http_upload_external, protocol v2   | v2     |
| Prosody  | mod_http_file_share, external mode      | jwt    |
| ejabberd | mod_http_upload with external_secret    | v1     |
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from urllib.parse import unquote
from dataclasses import dataclass

import pytest

from conftest import DOMAIN, MAX_SIZE
from support import Response, http, jpeg_bytes, noise, sha256


@dataclass(frozen=True)
class Service:
    id: str
    server: str  # fixture name of the logged-in client
    jid: str
    scheme: str


SERVICES = [
    Service("prosody-v1", "prosody_client", "upload-v1.localhost", "v1"),
    Service("prosody-v2", "prosody_client", "upload-v2.localhost", "v2"),
    Service("prosody-jwt", "prosody_client", "share.localhost", "jwt"),
    Service("ejabberd", "ejabberd_client", "upload.localhost", "v1"),
]

# (file name, content type asked for in the slot request, body)
FILES = {
    "jpeg": ("Grüße Ä (1).jpg", "image/jpeg", jpeg_bytes(300 * 1024 + 7, seed=1)),
    "text": ("notes for (Zoë).txt", "text/plain", ("Ünïcödé text, line by line.\n" * 900).encode()),
    "untyped": ("data+v2 100% (2).bin", None, noise(64 * 1024 + 3, seed=2)),
}

INLINE_TYPES = ("image/jpeg", "text/plain")


def client_for(request, service: Service):
    return request.getfixturevalue(service.server)


def put(aio, slot, body: bytes, content_type: str | None, **kw) -> Response:
    """PUT with exactly the headers the slot gives, plus Content-Length and (when
    the slot was requested with one) Content-Type, as XEP-0363 §5 says."""
    headers = dict(slot.headers)
    headers["Content-Length"] = str(len(body))
    skip = ()
    if content_type is not None:
        headers["Content-Type"] = content_type
    else:
        # aiohttp would add `application/octet-stream` for bytes; send none at all.
        skip = ("Content-Type",)
    return aio.run(http("PUT", slot.put, headers=headers, data=body, skip_auto_headers=skip, **kw))


def served_name(get_url: str) -> str:
    """The file name as the server put it into the URL (ejabberd sanitises it)."""
    return urllib.parse.unquote(get_url.rsplit("/", 1)[1])


def expected_type(content_type: str | None) -> str:
    return content_type or "application/octet-stream"


def check_download_headers(resp: Response, size: int, content_type: str, name: str) -> None:
    assert resp.header("Content-Length") == str(size)
    assert resp.header("Content-Type").split(";")[0].strip() == content_type
    disposition = resp.header("Content-Disposition")
    kind = "inline" if content_type in INLINE_TYPES else "attachment"
    assert disposition.startswith(kind + ";"), disposition
    m = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition)
    assert m, disposition
    assert urllib.parse.unquote(m.group(1)) == name
    assert re.search(r'filename="[\x20-\x7e]*"', disposition), disposition
    etag = resp.header("ETag")
    assert etag and etag.startswith('"') and not etag.startswith("W/"), etag
    assert resp.header("Last-Modified")
    assert resp.header("Accept-Ranges") == "bytes"
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert "sandbox" in resp.header("Content-Security-Policy")
    assert resp.all("Access-Control-Allow-Origin") == ["*"]


def roundtrip(
    aio, slot, body: bytes, content_type: str | None, ssl=None, conflict: bool = True
) -> None:
    """PUT 201, GET the same bytes with the right headers, HEAD the same headers,
    `Range: bytes=0-1`, and (unless `conflict` is false) a second PUT refused
    with 409."""
    name = served_name(slot.get)
    resp = put(aio, slot, body, content_type, ssl=ssl)
    assert resp.status == 201, (resp.status, resp.text(), slot)

    get = aio.run(http("GET", slot.get, ssl=ssl))
    assert get.status == 200, (get.status, get.text())
    assert sha256(get.body) == sha256(body)
    check_download_headers(get, len(body), expected_type(content_type), name)

    head = aio.run(http("HEAD", slot.get, ssl=ssl))
    assert head.status == 200
    assert head.body == b""
    for h in (
        "Content-Length",
        "Content-Type",
        "Content-Disposition",
        "ETag",
        "Last-Modified",
        "Accept-Ranges",
        "Content-Security-Policy",
    ):
        assert head.all(h) == get.all(h), h
    # max-age counts down with the wall clock: a second may pass between the two.
    def max_age(resp) -> int:
        (value,) = resp.all("Cache-Control")
        assert value.startswith("private, max-age=") and value.endswith(", immutable"), value
        return int(value.split("max-age=")[1].split(",")[0])

    assert 0 <= max_age(get) - max_age(head) <= 2, (get.all("Cache-Control"), head.all("Cache-Control"))

    probe = aio.run(http("GET", slot.get, headers={"Range": "bytes=0-1"}, ssl=ssl))
    assert probe.status == 206
    assert probe.body == body[:2]
    assert probe.header("Content-Range") == f"bytes 0-1/{len(body)}"

    if not conflict:
        return
    again = put(aio, slot, body, content_type, ssl=ssl)
    assert again.status == 409, (again.status, again.text())
    after = aio.run(http("GET", slot.get, ssl=ssl))
    assert sha256(after.body) == sha256(body)


# --------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.id)
def test_discovery(request, service):
    """disco#items + disco#info find the service and its max-file-size."""
    client = client_for(request, service)
    found = {s.jid: s for s in client.upload_services(DOMAIN)}
    assert service.jid in found, found
    assert found[service.jid].max_file_size == MAX_SIZE


@pytest.mark.parametrize("kind", FILES)
@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.id)
def test_upload_download(request, aio, upslot, service, kind):
    name, content_type, body = FILES[kind]
    client = client_for(request, service)
    slot = client.request_slot(service.jid, name, len(body), content_type)
    assert slot.put.startswith(upslot.base_url) and slot.get.startswith(upslot.base_url)
    if service.scheme == "jwt":
        assert slot.headers.get("Authorization", "").startswith("Bearer ")
        assert slot.put == slot.get
        # Prosody binds the file name: its `filename` claim is the URL's last
        # segment, decoded, which upslot holds it to (docs/limits.md).
        claims = jwt_claims(slot)
        assert claims["filename"] == name, claims
        assert unquote(slot.put.rsplit("/", 1)[1]) == claims["filename"]
        assert unquote(slot.put.rsplit("/", 2)[1]) == claims["slot"]
    else:
        assert slot.headers == {}
        assert slot.put.split("?")[0] == slot.get
        assert ("?v2=" if service.scheme == "v2" else "?v=") in slot.put
    roundtrip(aio, slot, body, content_type)


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.id)
def test_slixmpp_upload_file(request, aio, tmp_path, service):
    """slixmpp's own upload_file(): its slot request and its PUT (aiohttp re-quotes
    the URL, so upslot sees other escapes than the server signed)."""
    client = client_for(request, service)
    path = tmp_path / "Photo – Été (copy 2).jpg"
    body = jpeg_bytes(200 * 1024, seed=3)
    path.write_bytes(body)
    url = client.upload_file_as_slixmpp_does(service.jid, path, "image/jpeg")
    get = aio.run(http("GET", url))
    assert get.status == 200
    assert sha256(get.body) == sha256(body)
    assert get.header("Content-Type") == "image/jpeg"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.id)
def test_refusals(request, aio, service):
    """What the slots imply: the size is bound, the token is checked, and a
    refused attempt leaves nothing (the slot can still be used)."""
    client = client_for(request, service)
    body = ("refusals " * 1000).encode()
    slot = client.request_slot(service.jid, "refusals (ü).txt", len(body), "text/plain")

    # Wrong size: shorter and longer bodies, each with its own honest Content-Length.
    size_refused = 413 if service.scheme == "jwt" else 403
    for wrong in (body[:-1], body + b"!"):
        resp = put(aio, slot, wrong, "text/plain")
        assert resp.status == size_refused, (resp.status, resp.text())
    # Tampered token.
    tampered = tamper(slot)
    resp = put(aio, tampered, body, "text/plain")
    assert resp.status == 403, (resp.status, resp.text())
    # Another path under the same token: the file name for v1/v2 (HMAC over the
    # path), the slot segment for JWT (claim `slot`), and for JWT the file name
    # too (claim `filename`).
    resp = put(aio, other_path(slot), body, "text/plain")
    assert resp.status == 403, (resp.status, resp.text())
    if service.scheme == "jwt":
        resp = put(aio, other_name(slot), body, "text/plain")
        assert resp.status == 403, (resp.status, resp.text())
    # Nothing was stored by any of that.
    assert aio.run(http("GET", slot.get)).status == 404
    assert aio.run(http("GET", other_path(slot).get)).status == 404

    if service.scheme == "v2":
        # v2 signs the type: another Content-Type is refused.
        resp = put(aio, slot, body, "text/html")
        assert resp.status == 403, (resp.status, resp.text())

    # The slot still works, once.
    assert put(aio, slot, body, "text/plain").status == 201
    assert put(aio, slot, body, "text/plain").status == 409
    if service.scheme == "jwt":
        # One slot, one file: no second name, whatever the token says.
        assert put(aio, other_name(slot), body, "text/plain").status in (403, 409)
        assert aio.run(http("GET", other_name(slot).get)).status == 404


def tamper(slot):
    """The same slot with one hex digit of its HMAC (or the JWT's signature) changed."""
    from support import Slot

    def flip(c: str) -> str:
        return "0" if c != "0" else "1"

    if "Authorization" in slot.headers:
        token = slot.headers["Authorization"]
        token = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        return Slot(slot.put, slot.get, {**slot.headers, "Authorization": token})
    url = slot.put
    return Slot(url[:-1] + flip(url[-1]), slot.get, dict(slot.headers))


def jwt_claims(slot):
    """The claims of a JWT slot's token, without checking it."""
    token = slot.headers["Authorization"].split()[-1]
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def other_name(slot):
    """The same JWT slot and token for another file name in that slot."""
    from support import Slot

    head, name = slot.put.rsplit("/", 1)
    moved = f"{head}/other-{name}"
    return Slot(moved, moved, dict(slot.headers))


def other_path(slot):
    """The same slot and token for a different path."""
    from support import Slot

    if "Authorization" in slot.headers:
        # .../upload/<slot>/<name>: change the slot segment.
        head, slot_id, name = slot.put.rsplit("/", 2)
        moved = f"{head}/{slot_id[:-1]}{'A' if slot_id[-1] != 'A' else 'B'}/{name}"
        return Slot(moved, moved, dict(slot.headers))
    path, _, query = slot.put.partition("?")
    moved = path.replace(".txt", ".html")
    assert moved != path
    return Slot(f"{moved}?{query}", moved, dict(slot.headers))
