"""Helpers for the interoperability suite: processes, ports, an asyncio loop in a
thread, an HTTP client that sends URLs exactly as given, and an XMPP client.

Everything started here binds 127.0.0.1 and is stopped by the fixture that
started it (see conftest.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yarl

ROOT = Path(__file__).resolve().parents[2]

# Bounds for every wait in the suite.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
CALL_TIMEOUT = 30.0


# --------------------------------------------------------------------------
# Ports and processes


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Proc:
    """A process started in its own session (so that it and the children it
    forks can be stopped together by its process-group id), with its output
    in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, **kw: Any) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._log_fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kw,
        )
        # run.sh's exit trap stops what a killed pytest could not.
        pidfile = os.environ.get("UPSLOT_INTEROP_PIDFILE")
        if pidfile:
            with open(pidfile, "a") as fh:
                fh.write(f"{self.popen.pid} {name}\n")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 40) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_port(self, port: int, timeout: float = START_TIMEOUT) -> None:
        """Bounded poll until something accepts on 127.0.0.1:port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before "
                    f"listening on {port}:\n{self.tail()}"
                )
            if port_open(port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not listening on {port} after {timeout}s:\n{self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM to the process group we created, then SIGKILL if needed."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(STOP_TIMEOUT)
        # Children that outlived the leader (same group) go too.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log_fh.close()


def run(argv: list[str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    """Runs a command to completion (bounded), failing with its output."""
    cp = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )
    if cp.returncode != 0:
        raise RuntimeError(
            f"{argv!r} exited with {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
        )
    return cp


# --------------------------------------------------------------------------
# An asyncio loop in a thread: slixmpp and aiohttp run there, tests stay plain
# functions and submit coroutines with a bounded wait.


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="interop-asyncio", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro, timeout: float = CALL_TIMEOUT):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), timeout=STOP_TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(STOP_TIMEOUT)
            self.loop.close()


# --------------------------------------------------------------------------
# HTTP: aiohttp, with the URL sent byte for byte as the slot gave it.


@dataclass
class Response:
    status: int
    headers: Any  # CIMultiDictProxy: every value, case-insensitive names
    body: bytes
    request_headers: dict = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def all(self, name: str) -> list[str]:
        return list(self.headers.getall(name, []))

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def http(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    ssl: Any = None,
    skip_auto_headers: tuple[str, ...] = (),
) -> Response:
    """One request on a fresh connection. `encoded=True` keeps yarl from
    re-quoting the path (it would upper-case Prosody's `%c3` and unescape `(`)."""
    connector = aiohttp.TCPConnector(ssl=ssl if ssl is not None else False, force_close=True)
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.request(
            method,
            yarl.URL(url, encoded=True),
            headers=headers or {},
            data=data,
            skip_auto_headers=skip_auto_headers,
            allow_redirects=False,
        ) as resp:
            body = await resp.read()
            return Response(resp.status, resp.headers.copy(), body, dict(resp.request_info.headers))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jpeg_bytes(size: int, seed: int = 1) -> bytes:
    """`size` bytes that start like a JPEG (SOI + JFIF APP0) and end with EOI;
    the rest is deterministic noise. Upslot never looks inside; the GET must
    return exactly these bytes."""
    head = bytes.fromhex("ffd8ffe000104a46494600010100000100010000")
    tail = bytes.fromhex("ffd9")
    return head + noise(size - len(head) - len(tail), seed) + tail


def noise(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(f"upslot-interop-{seed}".encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


# --------------------------------------------------------------------------
# XMPP: slixmpp, logged in as a real user.


@dataclass
class Slot:
    put: str
    get: str
    headers: dict[str, str]


@dataclass
class UploadService:
    jid: str
    max_file_size: int | None


class Xmpp:
    """A logged-in slixmpp client living in `aio`'s loop."""

    def __init__(self, aio: LoopThread, jid: str, password: str, port: int) -> None:
        self.aio = aio
        self.jid = jid
        self.client = aio.run(self._connect(jid, password, port), timeout=START_TIMEOUT)

    @staticmethod
    async def _connect(jid: str, password: str, port: int):
        import slixmpp

        # Loopback only: plain TCP, SCRAM without TLS (no certificates to make).
        client = slixmpp.ClientXMPP(
            jid,
            password,
            plugin_config={"feature_mechanisms": {"unencrypted_scram": True}},
        )
        client.enable_direct_tls = False
        client.enable_starttls = False
        client.enable_plaintext = True
        for plugin in ("xep_0030", "xep_0128", "xep_0363"):
            client.register_plugin(plugin)
        started: asyncio.Future = asyncio.get_running_loop().create_future()

        def ok(_event: Any) -> None:
            if not started.done():
                started.set_result(True)

        def failed(event: Any) -> None:
            if not started.done():
                started.set_exception(RuntimeError(f"{jid}: login failed: {event}"))

        client.add_event_handler("session_start", ok)
        client.add_event_handler("failed_all_auth", failed)
        client.add_event_handler("connection_failed", failed)
        client.connect("127.0.0.1", port)
        await asyncio.wait_for(started, START_TIMEOUT)
        return client

    def upload_services(self, domain: str) -> list[UploadService]:
        """XEP-0363 §2 discovery: disco#items on the domain, disco#info on each."""

        async def go() -> list[UploadService]:
            disco = self.client.plugin["xep_0030"]
            items = await disco.get_items(jid=domain, timeout=10)
            jids = [domain] + [item[0] for item in items["disco_items"]["items"]]
            found = []
            for jid in jids:
                info = await disco.get_info(jid=jid, timeout=10)
                d = info["disco_info"]
                if ("store", "file") not in {(i[0], i[1]) for i in d["identities"]}:
                    continue
                if "urn:xmpp:http:upload:0" not in d["features"]:
                    continue
                limit = None
                for form in d.iterables:
                    values = form["values"]
                    if values.get("FORM_TYPE") == ["urn:xmpp:http:upload:0"]:
                        raw = values.get("max-file-size")
                        limit = int(raw) if raw not in (None, "") else None
                found.append(UploadService(str(jid), limit))
            return found

        return self.aio.run(go())

    def request_slot(
        self, service: str, filename: str, size: int, content_type: str | None
    ) -> Slot:
        """A slot request as in XEP-0363 §4; without `content-type` when None."""

        async def go() -> Slot:
            iq = self.client.make_iq_get(ito=service)
            req = iq["http_upload_request"]
            req["filename"] = filename
            req["size"] = str(size)
            if content_type is not None:
                req["content-type"] = content_type
            result = await iq.send(timeout=10)
            slot = result["http_upload_slot"]
            headers = {h["name"]: h["value"] for h in slot["put"]["headers"]}
            return Slot(slot["put"]["url"], slot["get"]["url"], headers)

        return self.aio.run(go())

    def upload_file_as_slixmpp_does(
        self, service: str, path: Path, content_type: str | None
    ) -> str:
        """slixmpp's own XEP-0363 upload, unchanged: its slot request, its PUT."""

        async def go() -> str:
            plugin = self.client.plugin["xep_0363"]
            plugin.upload_service = service
            return await plugin.upload_file(path, content_type=content_type, timeout=10)

        return self.aio.run(go())

    def close(self) -> None:
        async def go() -> None:
            self.client.disconnect()
            try:
                await asyncio.wait_for(self.client.disconnected, STOP_TIMEOUT)
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass

        try:
            self.aio.run(go(), timeout=STOP_TIMEOUT + 1)
        except Exception:  # noqa: BLE001
            pass
