"""One run through nginx terminating TLS in front of upslot, as deployed:
deploy/nginx/upslot.conf (host name, ports and certificate paths replaced),
a certificate from a throwaway CA that the client trusts, and Prosody handing
out https slots (`http_upload_external_base_url = "https://localhost:<port>/upload/"`,
and the same for mod_http_file_share). The client speaks HTTP/1.1 (aiohttp).
"""

from __future__ import annotations

import ssl
import time

import aiohttp
import pytest

from support import http, jpeg_bytes
from test_xmpp import put, roundtrip, tamper

TLS_SERVICES = [
    pytest.param("upload-tls.localhost", "v1", id="prosody-v1-https"),
    pytest.param("share-tls.localhost", "jwt", id="prosody-jwt-https"),
]


@pytest.fixture(scope="module")
def trusting(test_ca):
    """What the client trusts: the system's CAs plus the test CA."""
    return ssl.create_default_context(cafile=str(test_ca.ca))


@pytest.mark.parametrize("jid,scheme", TLS_SERVICES)
def test_https_slot_through_nginx(aio, nginx, prosody_client, trusting, jid, scheme):
    body = jpeg_bytes(400 * 1024 + 5, seed=20)
    slot = prosody_client.request_slot(jid, "Grüße Ä (1).jpg", len(body), "image/jpeg")
    base = f"https://localhost:{nginx.port}/upload/"
    assert slot.put.startswith(base) and slot.get.startswith(base), slot
    # The 409 for a body this size is test_early_refusal_through_nginx's business.
    roundtrip(aio, slot, body, "image/jpeg", ssl=trusting, conflict=False)

    # Refusals of small bodies travel back through nginx unchanged.
    small = b"1234567890"
    fresh = prosody_client.request_slot(jid, "second (copy).txt", len(small), "text/plain")
    wrong = put(aio, fresh, small[:-1], "text/plain", ssl=trusting)
    assert wrong.status == (413 if scheme == "jwt" else 403), (wrong.status, wrong.text())
    assert put(aio, fresh, small, "text/plain", ssl=trusting).status == 201
    again = put(aio, fresh, small, "text/plain", ssl=trusting)
    assert again.status == 409, (again.status, again.text())
    get = aio.run(http("GET", fresh.get, ssl=trusting))
    assert get.status == 200 and get.body == small
    # upslot's own headers pass through nginx once each.
    assert get.all("X-Content-Type-Options") == ["nosniff"]
    assert get.all("Access-Control-Allow-Origin") == ["*"]


@pytest.mark.parametrize("jid,scheme", TLS_SERVICES)
def test_early_refusal_through_nginx(aio, nginx, prosody_client, trusting, jid, scheme):
    """A refusal that upslot gives before the body (409 for a path already stored,
    403 for a bad token) must reach an HTTP/1.1 client behind nginx as itself."""
    body = jpeg_bytes(1024 * 1024, seed=21)
    slot = prosody_client.request_slot(jid, "early (refusal).jpg", len(body), "image/jpeg")
    assert put(aio, slot, body, "image/jpeg", ssl=trusting).status == 201
    other = tamper(prosody_client.request_slot(jid, "early (token).jpg", len(body), "image/jpeg"))
    seen: dict[str, list[int]] = {"conflict": [], "bad token": []}
    for _ in range(5):  # before upslot read refused bodies, most of these were 502s
        seen["conflict"].append(put(aio, slot, body, "image/jpeg", ssl=trusting).status)
        seen["bad token"].append(put(aio, other, body, "image/jpeg", ssl=trusting).status)
    assert seen == {"conflict": [409] * 5, "bad token": [403] * 5}


def test_https_slot_needs_the_ca(aio, nginx, prosody_client):
    """The TLS is real: without the test CA the client refuses the certificate."""
    slot = prosody_client.request_slot("upload-tls.localhost", "untrusted.txt", 3, "text/plain")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        aio.run(
            http(
                "PUT",
                slot.put,
                headers={"Content-Type": "text/plain"},
                data=b"abc",
                ssl=ssl.create_default_context(),
            )
        )


def test_failed_auth_through_nginx(aio, nginx, upslot, prosody_client, trusting):
    """Behind nginx (trusted_proxies = 127.0.0.1/32) a refused slot is logged once,
    with the fixed fail2ban line, and without the token or the file name."""
    slot = prosody_client.request_slot(
        "upload-tls.localhost", "fail2ban probe (ß).txt", 3, "text/plain"
    )
    bad = slot.put[:-1] + ("0" if slot.put[-1] != "0" else "1")
    # Several logs when upslot is a cluster: the request lands in one of them.
    before = [len(log.read_bytes()) for log in upslot.logs()]
    resp = aio.run(
        http("PUT", bad, headers={"Content-Type": "text/plain"}, data=b"abc", ssl=trusting)
    )
    assert resp.status == 403
    deadline = time.monotonic() + 5
    while True:  # the line may be written just after the response went out
        new = "".join(
            log.read_bytes()[n:].decode(errors="replace") for log, n in zip(upslot.logs(), before)
        )
        lines = [line for line in new.splitlines() if "authorization failed" in line]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(lines) == 1, new
    assert "client=127.0.0.1" in lines[0] and "scheme=v1" in lines[0], lines[0]
    token = slot.put.split("?v=")[1]
    assert token not in new and "probe" not in new, new
