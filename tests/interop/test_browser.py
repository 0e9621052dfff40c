"""A real browser: headless Chromium loads a page from one origin
(http://127.0.0.1:<page port>) whose script uploads with fetch() to upslot on
another origin (http://127.0.0.1:<upslot port>), with the slot's Authorization
header, then downloads the file, HEADs it, sends a `Range: bytes=0-1` probe,
and reads the response headers a web client needs. The script posts what it
saw back to the page's own server. Nothing here is simulated: if upslot's CORS
answers were wrong, Chromium would refuse to let the script see the responses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from support import Proc, Slot, free_port, http, jpeg_bytes, noise, sha256

PAGE = r"""<!doctype html>
<meta charset="utf-8">
<title>upslot in a browser</title>
<pre id="out">running</pre>
<script>
"use strict";
const CASES = __CASES__;
const EXPOSED = ["content-length", "content-range", "etag", "content-type",
                 "content-disposition", "accept-ranges", "last-modified", "cache-control"];

function hex(buf) {
  return Array.from(new Uint8Array(buf), b => b.toString(16).padStart(2, "0")).join("");
}
function headersOf(resp) {
  const h = {};
  for (const name of EXPOSED) h[name] = resp.headers.get(name);
  return h;
}
// A failed fetch() (CORS refused, network error) is recorded, not thrown.
async function attempt(fn) {
  try { return await fn(); } catch (e) { return { error: e.name + ": " + e.message }; }
}
async function put(url, headers, body) {
  const resp = await fetch(url, { method: "PUT", headers, body, cache: "no-store" });
  return { status: resp.status, text: await resp.text() };
}
async function runCase(c) {
  const r = { name: c.name };
  const body = await (await fetch(c.payload, { cache: "no-store" })).arrayBuffer();
  r.payload_sha256 = hex(await crypto.subtle.digest("SHA-256", body));
  r.put = await attempt(() => put(c.put, c.headers, body));
  r.put_again = await attempt(() => put(c.put, c.headers, body));
  r.put_tampered = await attempt(() => put(c.tampered_put, c.tampered_headers, body));
  r.get = await attempt(async () => {
    const resp = await fetch(c.get, { cache: "no-store" });
    const got = await resp.arrayBuffer();
    return { status: resp.status, headers: headersOf(resp), length: got.byteLength,
             sha256: hex(await crypto.subtle.digest("SHA-256", got)) };
  });
  r.head = await attempt(async () => {
    const resp = await fetch(c.get, { method: "HEAD", cache: "no-store" });
    return { status: resp.status, headers: headersOf(resp) };
  });
  r.range = await attempt(async () => {
    const resp = await fetch(c.get, { headers: { "Range": "bytes=0-1" }, cache: "no-store" });
    return { status: resp.status, headers: headersOf(resp), body: hex(await resp.arrayBuffer()) };
  });
  return r;
}
(async () => {
  const results = [];
  for (const c of CASES) results.push(await runCase(c));
  document.getElementById("out").textContent = JSON.stringify(results, null, 1);
  await fetch("/result", { method: "POST", body: JSON.stringify({ results }) });
})().catch(e => fetch("/result", { method: "POST", body: JSON.stringify({ fatal: String(e) }) }));
</script>
"""


class PageServer:
    """The page's origin: a small http.server on its own 127.0.0.1 port that
    serves the page and the payloads, and receives the script's results."""

    def __init__(self, cases: list[dict], payloads: dict[str, bytes]) -> None:
        self.page = PAGE.replace("__CASES__", json.dumps(cases)).encode()
        self.payloads = payloads
        self.result: dict | None = None
        self.done = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_GET(self):
                path = urllib.parse.urlsplit(self.path).path
                if path == "/page.html":
                    self._send(200, "text/html; charset=utf-8", outer.page)
                elif path.startswith("/payload/") and path[9:] in outer.payloads:
                    self._send(200, "application/octet-stream", outer.payloads[path[9:]])
                else:
                    self._send(404, "text/plain", b"not found")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.result = json.loads(self.rfile.read(length))
                self._send(204, "text/plain", b"")
                outer.done.set()

            def _send(self, status, ctype, body):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body:
                    self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("chromium is not installed (tests/interop/run.sh installs it)", pytrace=False)


def run_page(tmp: Path, page: PageServer, timeout: float = 60) -> dict:
    """Headless Chromium loads the page; returns what its script posted back."""
    profile = tmp / f"profile-{page.port}"
    profile.mkdir()
    argv = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        f"{page.origin}/page.html",
    ]
    proc = Proc(
        "chromium",
        argv,
        tmp / f"chromium-{page.port}.log",
        env={**os.environ, "HOME": str(profile)},
    )
    try:
        if not page.done.wait(timeout):
            raise TimeoutError(f"the page posted no result within {timeout}s:\n{proc.tail()}")
    finally:
        proc.stop()
    assert page.result is not None
    (tmp / f"results-{page.port}.json").write_text(json.dumps(page.result, indent=1))
    assert "fatal" not in page.result, page.result
    return {r["name"]: r for r in page.result["results"]}


def tampered(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    if "Authorization" in headers:
        token = headers["Authorization"]
        token = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        return url, {**headers, "Authorization": token}
    return url[:-1] + ("0" if url[-1] != "0" else "1"), headers


def make_case(
    name: str,
    put_url: str,
    get_url: str,
    headers: dict[str, str],
    content_type: str | None,
    payload: str,
) -> dict:
    headers = dict(headers)
    if content_type:
        headers["Content-Type"] = content_type
    t_url, t_headers = tampered(put_url, headers)
    return {
        "name": name,
        "put": put_url,
        "get": get_url,
        "headers": headers,
        "tampered_put": t_url,
        "tampered_headers": t_headers,
        "payload": f"/payload/{payload}",
    }


def options_count(upslot) -> float:
    m = re.search(
        r'^upslot_http_request_duration_seconds_count\{method="OPTIONS",status_class="2xx"\} (\S+)$',
        upslot.metrics(),
        re.M,
    )
    return float(m.group(1)) if m else 0.0


JPEG = jpeg_bytes(300 * 1024 + 11, seed=10)
TEXT = ("Ünïcödé from a browser\n" * 500).encode()
BIN = noise(70 * 1024 + 1, seed=11)
PAYLOADS = {"jpeg": JPEG, "text": TEXT, "bin": BIN}


def check_case(r: dict, body: bytes, content_type: str) -> None:
    """What a web client (Converse.js, Movim) needs to be able to read."""
    size = len(body)
    assert r["payload_sha256"] == sha256(body)
    assert r["put"] == {"status": 201, "text": r["put"]["text"]}, r["put"]
    assert r["put_again"].get("status") == 409, r["put_again"]
    assert r["put_tampered"].get("status") == 403, r["put_tampered"]
    get = r["get"]
    assert get.get("status") == 200, get
    assert get["length"] == size and get["sha256"] == sha256(body)
    h = get["headers"]
    assert h["content-length"] == str(size), h
    assert h["content-type"] == content_type, h
    assert h["etag"] and h["etag"].startswith('"'), h
    assert h["content-disposition"] and "filename*=UTF-8''" in h["content-disposition"], h
    head = r["head"]
    assert head.get("status") == 200, head
    assert head["headers"]["content-length"] == str(size), head
    assert head["headers"]["etag"] == h["etag"], head
    rng = r["range"]
    assert rng.get("status") == 206, rng
    assert rng["headers"]["content-range"] == f"bytes 0-1/{size}", rng
    assert rng["headers"]["content-length"] == "2", rng
    assert rng["body"] == body[:2].hex(), rng


def test_browser_cors_any_origin(tmp_path, aio, upslot, prosody_client):
    """`allow_origins = ["*"]` (the default): slots from `upslot sign` (jwt, v1,
    v2) and from Prosody's mod_http_file_share, as Converse.js would get them."""
    cases, expect = [], {}

    url, hdrs = upslot.sign("jwt", len(JPEG), "Grüße Ä (1).jpg", "image/jpeg")
    cases.append(make_case("sign-jwt", url, url, hdrs, "image/jpeg", "jpeg"))
    expect["sign-jwt"] = (JPEG, "image/jpeg")

    url, hdrs = upslot.sign("v1", len(TEXT), "notes (browser).txt")
    cases.append(make_case("sign-v1", url, url.split("?")[0], hdrs, "text/plain", "text"))
    expect["sign-v1"] = (TEXT, "text/plain")

    url, hdrs = upslot.sign("v2", len(BIN), "data+v2 100%.bin", "application/octet-stream")
    cases.append(
        make_case("sign-v2", url, url.split("?")[0], hdrs, "application/octet-stream", "bin")
    )
    expect["sign-v2"] = (BIN, "application/octet-stream")

    slot: Slot = prosody_client.request_slot(
        "share.localhost", "Été (from Prosody).jpg", len(JPEG), "image/jpeg"
    )
    cases.append(make_case("prosody-jwt", slot.put, slot.get, slot.headers, "image/jpeg", "jpeg"))
    expect["prosody-jwt"] = (JPEG, "image/jpeg")

    page = PageServer(cases, PAYLOADS)
    try:
        assert page.origin != upslot.origin
        before = options_count(upslot)
        results = run_page(tmp_path, page)
    finally:
        page.close()
    for name, (body, ctype) in expect.items():
        check_case(results[name], body, ctype)
    # Chromium asked first: every cross-origin PUT with Authorization / a
    # non-simple Content-Type was preceded by an OPTIONS preflight.
    assert options_count(upslot) > before


def test_browser_cors_origin_list(tmp_path, upslot_factory, aio):
    """`allow_origins = [<the page's origin>]`: that origin can upload and
    download; a page from any other origin cannot, and nothing is stored."""
    allowed = PageServer([], PAYLOADS)
    other = PageServer([], PAYLOADS)
    try:
        server = upslot_factory([allowed.origin])
        url_a, hdrs_a = server.sign("jwt", len(JPEG), "allowed (ä).jpg", "image/jpeg")
        url_b, hdrs_b = server.sign("jwt", len(JPEG), "refused (ö).jpg", "image/jpeg")
        allowed.page = PAGE.replace(
            "__CASES__",
            json.dumps([make_case("allowed", url_a, url_a, hdrs_a, "image/jpeg", "jpeg")]),
        ).encode()
        other.page = PAGE.replace(
            "__CASES__",
            json.dumps([make_case("refused", url_b, url_b, hdrs_b, "image/jpeg", "jpeg")]),
        ).encode()
        ok = run_page(tmp_path, allowed)["allowed"]
        refused = run_page(tmp_path, other)["refused"]
    finally:
        allowed.close()
        other.close()

    check_case(ok, JPEG, "image/jpeg")
    # The other origin's script sees network errors only: its preflight got no
    # Access-Control-Allow-Origin, so Chromium never sent the PUT.
    for step in ("put", "put_again", "put_tampered", "get", "head", "range"):
        assert "error" in refused[step] and "TypeError" in refused[step]["error"], (step, refused)
    assert aio.run(http("GET", url_b)).status == 404
    # Outside the browser, the same upslot names the allowed origin, once.
    resp = aio.run(
        http(
            "OPTIONS",
            url_a,
            headers={
                "Origin": allowed.origin,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
    )
    assert resp.status == 204
    assert resp.all("Access-Control-Allow-Origin") == [allowed.origin]
    resp = aio.run(
        http(
            "OPTIONS",
            url_b,
            headers={"Origin": other.origin, "Access-Control-Request-Method": "PUT"},
        )
    )
    assert resp.all("Access-Control-Allow-Origin") == []
