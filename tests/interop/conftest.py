"""Fixtures of the interoperability suite: upslot (the built binary), Prosody 0.12
with its upload components (v1, v2, file_share, and two more behind nginx),
ejabberd with mod_http_upload, nginx with TLS, and logged-in slixmpp clients.
Each binds 127.0.0.1 on ports picked at start, waits for its port with a
bounded poll, and is stopped by its finalizer.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import ROOT, LoopThread, Proc, Xmpp, free_port, run

SECRET = "interop-" + secrets.token_hex(16)
DOMAIN = "localhost"
USER = "alice"
PASSWORD = "correct horse " + secrets.token_hex(4)
MAX_SIZE = 10 * 1024 * 1024  # what upslot and the XMPP servers are told
# Set: "upslot" is three instances on S3 (Garage) and PostgreSQL behind nginx,
# started by deploy/cluster/ (README.md, "Running several instances").
CLUSTER = os.environ.get("UPSLOT_INTEROP_CLUSTER") == "1"


def _q(s: str) -> str:
    """A Lua / YAML / TOML double-quoted string (JSON escaping is valid in all three
    for the ASCII paths and URLs we write)."""
    return json.dumps(str(s))


def pytest_report_header(config):
    return f"upslot binary: {upslot_binary()}"


def upslot_binary() -> Path:
    if os.environ.get("UPSLOT_BIN"):
        return Path(os.environ["UPSLOT_BIN"])
    found = [
        p for p in (ROOT / "target/release/upslot", ROOT / "target/debug/upslot") if p.exists()
    ]
    if not found:
        pytest.exit("no target/{release,debug}/upslot: run `cargo build` first", returncode=2)
    return max(found, key=lambda p: p.stat().st_mtime)


def need(tool: str) -> str:
    path = shutil.which(tool) or (tool if Path(tool).exists() else None)
    if not path:
        pytest.fail(f"{tool} is not installed (tests/interop/run.sh installs it)", pytrace=False)
    return path


# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def aio():
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture(scope="session")
def ports():
    """Ports chosen up front, because configs name each other's (Prosody's
    https component names nginx's port before nginx starts)."""
    names = ["upslot", "upslot_admin", "prosody", "ejabberd", "ejabberd_dist", "nginx"]
    chosen: dict[str, int] = {}
    while len(chosen) < len(names):
        p = free_port()
        if p not in chosen.values():
            chosen[names[len(chosen)]] = p
    return chosen


# --------------------------------------------------------------------------
# upslot


@dataclass
class Upslot:
    proc: Proc
    config: Path
    port: int
    admin: int
    data_dir: Path
    # In a cluster: the other instances, whose logs a request may land in too.
    others: list[Proc] = field(default_factory=list)

    def logs(self) -> list[Path]:
        return [p.log for p in [self.proc, *self.others]]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/upload/"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sign(
        self,
        scheme: str,
        size: int,
        path: str,
        content_type: str | None = None,
        base_url: str | None = None,
    ) -> tuple[str, dict[str, str]]:
        """`upslot sign`: (PUT URL, headers to send with it)."""
        argv = [
            str(upslot_binary()),
            "sign",
            "-c",
            str(self.config),
            "--scheme",
            scheme,
            "--size",
            str(size),
            "--base-url",
            base_url or self.base_url,
        ]
        if content_type:
            argv += ["--type", content_type]
        out = run(argv + [path]).stdout.splitlines()
        headers = {}
        for line in out[1:]:
            name, _, value = line.partition(": ")
            headers[name] = value
        return out[0], headers

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/metrics", timeout=10) as r:
            return r.read().decode()


def start_upslot(
    tmp: Path, port: int, admin: int, allow_origins: list[str], tables: str = ""
) -> Upslot:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "upslot.toml"
    config.write_text(
        textwrap.dedent(f"""\
        listen = "127.0.0.1:{port}"
        base_path = "/upload/"
        data_dir = {_q(tmp / "data")}
        secret = {_q(SECRET)}
        max_file_size = "{MAX_SIZE} B"
        min_free_space = "0 B"
        trusted_proxies = ["127.0.0.1/32"]

        [admin]
        listen = "127.0.0.1:{admin}"

        [cors]
        allow_origins = {json.dumps(allow_origins)}
        """)
        + tables
    )
    run([str(upslot_binary()), "check-config", str(config)])
    proc = Proc(
        "upslot",
        [str(upslot_binary()), "serve", "-c", str(config)],
        tmp / "upslot.log",
        env={**os.environ, "UPSLOT_LOG": "info"},
    )
    try:
        proc.wait_port(port)
        proc.wait_port(admin)
    except Exception:
        proc.stop()
        raise
    return Upslot(proc, config, port, admin, tmp / "data")


@pytest.fixture(scope="session")
def upslot(tmp_path_factory, ports):
    if CLUSTER:
        # Under /tmp: PostgreSQL runs as its own user, which must reach its socket.
        tmp = Path(tempfile.mkdtemp(prefix="upslot-interop-cluster-"))
        try:
            yield from upslot_cluster(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    server = start_upslot(
        tmp_path_factory.mktemp("upslot"), ports["upslot"], ports["upslot_admin"], ["*"]
    )
    yield server
    server.proc.stop()


def cluster_script(script: str, *args: str) -> None:
    run(["bash", str(ROOT / "deploy" / "cluster" / script), *args], timeout=120)


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip().strip('"') for k, v in pairs}


def upslot_cluster(tmp: Path):
    """Garage, PostgreSQL, three upslot instances and nginx in front of them;
    the Upslot it yields is nginx, signing with the first instance's config."""
    stops = []
    try:
        cluster_script("garage.sh", "start", str(tmp))
        stops.append(lambda: cluster_script("garage.sh", "stop", str(tmp)))
        cluster_script("postgres.sh", "start", str(tmp))
        stops.append(lambda: cluster_script("postgres.sh", "stop", str(tmp)))
        s3, pg = env_file(tmp / "garage.env"), env_file(tmp / "postgres.env")
        tables = textwrap.dedent(f"""
            [storage]
            backend = "s3"
            endpoint = {_q(s3["S3_ENDPOINT"])}
            region = {_q(s3["S3_REGION"])}
            bucket = {_q(s3["S3_BUCKET"])}
            access_key_id = {_q(s3["AWS_ACCESS_KEY_ID"])}
            secret_access_key = {_q(s3["AWS_SECRET_ACCESS_KEY"])}

            [index]
            backend = "postgres"
            url = {_q(pg["UPSLOT_INDEX_URL"])}
            """)
        instances = []
        for i in range(3):
            instance = start_upslot(tmp / f"upslot{i}", free_port(), free_port(), ["*"], tables)
            instances.append(instance)
            stops.append(instance.proc.stop)
        cluster_script("nginx.sh", "start", str(tmp), *(f"127.0.0.1:{u.port}" for u in instances))
        stops.append(lambda: cluster_script("nginx.sh", "stop", str(tmp)))
        port = int(env_file(tmp / "nginx.env")["NGINX_URL"].rsplit(":", 1)[1])
        first = instances[0]
        others = [u.proc for u in instances[1:]]
        yield Upslot(first.proc, first.config, port, first.admin, first.data_dir, others)
    finally:
        for stop in reversed(stops):
            stop()


@pytest.fixture(scope="session")
def upslot_factory(tmp_path_factory):
    """More upslot instances (other CORS settings); all stopped at the end."""
    started: list[Upslot] = []

    def make(allow_origins: list[str]) -> Upslot:
        server = start_upslot(
            tmp_path_factory.mktemp("upslot-extra"), free_port(), free_port(), allow_origins
        )
        started.append(server)
        return server

    yield make
    for server in started:
        server.proc.stop()


# --------------------------------------------------------------------------
# Prosody: one instance, four upload components.


@dataclass
class Prosody:
    proc: Proc
    port: int
    # component JID -> what it is
    components: dict[str, str]


PROSODY_COMPONENTS = {
    "upload-v1.localhost": "mod_http_upload_external v1",
    "upload-v2.localhost": "mod_http_upload_external v2",
    "share.localhost": "mod_http_file_share (external, JWT)",
    "upload-tls.localhost": "mod_http_upload_external v1 behind nginx (https)",
    "share-tls.localhost": "mod_http_file_share behind nginx (https)",
}


@pytest.fixture(scope="session")
def prosody(tmp_path_factory, ports, upslot):
    prosody_bin = need("prosody")
    prosodyctl = need("prosodyctl")
    tmp = tmp_path_factory.mktemp("prosody")
    (tmp / "data").mkdir()
    base = upslot.base_url
    tls_base = f"https://localhost:{ports['nginx']}/upload/"
    config = tmp / "prosody.cfg.lua"
    config.write_text(
        textwrap.dedent(f"""\
        -- written by tests/interop/conftest.py
        run_as_root = true
        daemonize = false
        pidfile = {_q(tmp / "prosody.pid")}
        data_path = {_q(tmp / "data")}
        log = {{ debug = {_q(tmp / "prosody.debug.log")}; info = "*stdout" }}
        interfaces = {{ "127.0.0.1" }}
        c2s_ports = {{ {ports["prosody"]} }}
        c2s_interfaces = {{ "127.0.0.1" }}
        s2s_ports = {{ }}
        http_ports = {{ }}
        https_ports = {{ }}
        modules_enabled = {{ "saslauth", "disco", "roster", "ping" }}
        modules_disabled = {{ "s2s", "posix" }}
        authentication = "internal_hashed"
        storage = "internal"
        c2s_require_encryption = false
        allow_unencrypted_plain_auth = true

        VirtualHost "{DOMAIN}"

        Component "upload-v1.localhost" "http_upload_external"
            http_upload_external_base_url = {_q(base)}
            http_upload_external_secret = {_q(SECRET)}
            http_upload_external_file_size_limit = {MAX_SIZE}

        Component "upload-v2.localhost" "http_upload_external"
            http_upload_external_base_url = {_q(base)}
            http_upload_external_secret = {_q(SECRET)}
            http_upload_external_file_size_limit = {MAX_SIZE}
            http_upload_external_protocol = "v2"

        Component "share.localhost" "http_file_share"
            http_file_share_base_url = {_q(base)}
            http_file_share_secret = {_q(SECRET)}
            http_file_share_size_limit = {MAX_SIZE}
            http_file_share_daily_quota = {100 * MAX_SIZE}

        Component "upload-tls.localhost" "http_upload_external"
            http_upload_external_base_url = {_q(tls_base)}
            http_upload_external_secret = {_q(SECRET)}
            http_upload_external_file_size_limit = {MAX_SIZE}

        Component "share-tls.localhost" "http_file_share"
            http_file_share_base_url = {_q(tls_base)}
            http_file_share_secret = {_q(SECRET)}
            http_file_share_size_limit = {MAX_SIZE}
            http_file_share_daily_quota = {100 * MAX_SIZE}
        """)
    )
    run([prosodyctl, "--config", str(config), "register", USER, DOMAIN, PASSWORD])
    proc = Proc("prosody", [prosody_bin, "--config", str(config), "-F"], tmp / "prosody.log")
    try:
        proc.wait_port(ports["prosody"])
    except Exception:
        proc.stop()
        raise
    yield Prosody(proc, ports["prosody"], dict(PROSODY_COMPONENTS))
    proc.stop()


# --------------------------------------------------------------------------
# ejabberd: the `erl ... -s ejabberd` that `ejabberdctl foreground` runs, with
# its own node name, cookie and distribution port, without epmd.


@dataclass
class Ejabberd:
    proc: Proc
    port: int
    upload_jid: str


def _ejabberd_libs() -> str:
    found = sorted(Path("/usr/lib").glob("*/ejabberd-*/ebin"))
    if not found:
        pytest.fail("ejabberd's ebin directory not found under /usr/lib/*/", pytrace=False)
    return str(found[-1].parent.parent)


def _erl_base(node: str, cookie: str, dist_port: int) -> list[str]:
    return [
        need("erl"),
        "-sname",
        node,
        "-setcookie",
        cookie,
        "+K",
        "true",
        "+P",
        "250000",
        "-env",
        "ERL_CRASH_DUMP_BYTES",
        "0",
        "-erl_epmd_port",
        str(dist_port),
        "-start_epmd",
        "false",
    ]


@pytest.fixture(scope="session")
def ejabberd(tmp_path_factory, ports, upslot):
    need("/usr/sbin/ejabberdctl")
    tmp = tmp_path_factory.mktemp("ejabberd")
    for d in ("spool", "logs", "docroot", "home"):
        (tmp / d).mkdir()
    put = upslot.base_url.rstrip("/")
    config = tmp / "ejabberd.yml"
    config.write_text(
        textwrap.dedent(f"""\
        # written by tests/interop/conftest.py
        hosts:
          - {DOMAIN}
        loglevel: info
        log_rotate_count: 0
        listen:
          -
            port: {ports["ejabberd"]}
            ip: "127.0.0.1"
            module: ejabberd_c2s
            starttls_required: false
        auth_method: internal
        auth_password_format: scram
        acl:
          local:
            user_regexp: ""
        access_rules:
          local:
            allow: local
          c2s:
            allow: all
        api_permissions:
          "console commands":
            from:
              - ejabberd_ctl
            who: all
            what: "*"
        modules:
          mod_disco: {{}}
          mod_ping: {{}}
          mod_roster: {{}}
          mod_http_upload:
            host: "upload.{DOMAIN}"
            put_url: {_q(put)}
            get_url: {_q(put)}
            external_secret: {_q(SECRET)}
            max_size: {MAX_SIZE}
            docroot: {_q(tmp / "docroot")}
        """)
    )
    node = f"upslot-interop-{os.getpid()}@localhost"
    cookie = secrets.token_hex(16)
    env = {
        **os.environ,
        "HOME": str(tmp / "home"),
        "EJABBERD_CONFIG_PATH": str(config),
        "EJABBERD_LOG_PATH": str(tmp / "logs" / "ejabberd.log"),
        "ERL_CRASH_DUMP": str(tmp / "logs" / "erl_crash.dump"),
        # Where Debian puts ejabberd's applications (ejabberdctl sets the same).
        "ERL_LIBS": _ejabberd_libs(),
        "CONTRIB_MODULES_PATH": str(tmp / "home" / "modules"),
    }
    argv = _erl_base(node, cookie, ports["ejabberd_dist"]) + [
        "-kernel",
        "inet_dist_use_interface",
        "{127,0,0,1}",
        "-mnesia",
        "dir",
        _q(tmp / "spool"),
        "-s",
        "ejabberd",
        "-noinput",
    ]
    proc = Proc("ejabberd", argv, tmp / "ejabberd.out", env=env, cwd=tmp / "spool")
    try:
        proc.wait_port(ports["ejabberd"], timeout=60)
        ctl = _erl_base(f"ctl-{os.getpid()}@localhost", cookie, ports["ejabberd_dist"]) + [
            "-dist_listen",
            "false",
            "-hidden",
            "-noinput",
            "-s",
            "ejabberd_ctl",
            "-extra",
            node,
        ]
        run(ctl + ["register", USER, DOMAIN, PASSWORD], env=env, cwd=tmp / "spool")
    except Exception:
        proc.stop()
        raise
    yield Ejabberd(proc, ports["ejabberd"], f"upload.{DOMAIN}")
    proc.stop()


# --------------------------------------------------------------------------
# Logged-in XMPP clients


@pytest.fixture(scope="session")
def prosody_client(aio, prosody):
    client = Xmpp(aio, f"{USER}@{DOMAIN}/interop", PASSWORD, prosody.port)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ejabberd_client(aio, ejabberd):
    client = Xmpp(aio, f"{USER}@{DOMAIN}/interop", PASSWORD, ejabberd.port)
    yield client
    client.close()


# --------------------------------------------------------------------------
# TLS: a throwaway CA and a certificate for localhost / 127.0.0.1


@dataclass
class TestCA:
    ca: Path
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    openssl = need("openssl")
    d = tmp_path_factory.mktemp("ca")
    ext = d / "leaf.ext"
    ext.write_text(
        textwrap.dedent("""\
        basicConstraints = critical, CA:FALSE
        keyUsage = critical, digitalSignature, keyEncipherment
        extendedKeyUsage = serverAuth
        subjectAltName = DNS:localhost, IP:127.0.0.1
        subjectKeyIdentifier = hash
        authorityKeyIdentifier = keyid, issuer
        """)
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            str(d / "ca.key"),
            "-out",
            str(d / "ca.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=upslot interop test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]
    )
    run(
        [
            openssl,
            "req",
            *ec,
            "-keyout",
            str(d / "leaf.key"),
            "-out",
            str(d / "leaf.csr"),
            "-subj",
            "/CN=localhost",
        ]
    )
    run(
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(d / "leaf.csr"),
            "-CA",
            str(d / "ca.pem"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            str(ext),
            "-out",
            str(d / "leaf.pem"),
        ]
    )
    return TestCA(d / "ca.pem", d / "leaf.pem", d / "leaf.key")


# --------------------------------------------------------------------------
# nginx terminating TLS in front of upslot


@dataclass
class Nginx:
    proc: Proc
    port: int
    config: Path
    site: str  # where the server blocks came from


DEPLOY_SITE = ROOT / "deploy" / "nginx" / "upslot.conf"


def nginx_site(
    listen_port: int, redirect_port: int, upstream_port: int, cert: Path, key: Path
) -> tuple[str, str]:
    """The server blocks an operator puts in front of upslot: the project's own
    deploy/nginx/upslot.conf with its host name, ports and certificate paths
    replaced, or (while that file does not exist) a minimal equivalent."""
    if not DEPLOY_SITE.exists():
        return "tests/interop (built-in)", _builtin_site(listen_port, upstream_port, cert, key)
    site = DEPLOY_SITE.read_text()
    subs = [
        (r"^[ \t]*listen\s+\[::\][^;]*;[ \t]*\n", ""),  # IPv6 listeners: loopback v4 only here
        (r"\blisten\s+443\b", f"listen 127.0.0.1:{listen_port}"),
        (r"\blisten\s+80\b", f"listen 127.0.0.1:{redirect_port}"),
        (r"\bserver\s+127\.0\.0\.1:5050\b", f"server 127.0.0.1:{upstream_port}"),
        (r"\bssl_certificate\s+[^;]+;", f"ssl_certificate {cert};"),
        (r"\bssl_certificate_key\s+[^;]+;", f"ssl_certificate_key {key};"),
        (r"\bupload\.example\.org\b", "localhost"),
    ]
    for pattern, repl in subs:
        site, n = re.subn(pattern, repl, site, flags=re.M)
        if n == 0 and "::" not in pattern:
            pytest.fail(
                f"{DEPLOY_SITE}: no match for {pattern!r}; update nginx_site() in "
                "tests/interop/conftest.py",
                pytrace=False,
            )
    code = "\n".join(line.split("#")[0] for line in site.splitlines())
    if re.search(r"\blisten\s+(?!127\.0\.0\.1:)", code):
        pytest.fail(f"{DEPLOY_SITE}: a listen directive left unreplaced", pytrace=False)
    return str(DEPLOY_SITE.relative_to(ROOT)), site


def _builtin_site(listen_port: int, upstream_port: int, cert: Path, key: Path) -> str:
    return textwrap.dedent(f"""\
        upstream upslot {{
            server 127.0.0.1:{upstream_port};
            keepalive 8;
        }}
        server {{
            listen 127.0.0.1:{listen_port} ssl http2;
            server_name localhost;
            ssl_certificate {cert};
            ssl_certificate_key {key};
            ssl_protocols TLSv1.2 TLSv1.3;
            client_max_body_size {MAX_SIZE};
            access_log off;
            location /upload/ {{
                # No URI part after the upstream: the request URI goes through as sent.
                proxy_pass http://upslot;
                proxy_http_version 1.1;
                proxy_set_header Connection "";
                proxy_set_header Host $host;
                proxy_set_header X-Forwarded-For $remote_addr;
                proxy_set_header X-Forwarded-Proto $scheme;
                proxy_request_buffering off;
                proxy_buffering off;
            }}
        }}
        """)


@pytest.fixture(scope="session")
def nginx(tmp_path_factory, ports, upslot, test_ca):
    nginx_bin = need("nginx")
    tmp = tmp_path_factory.mktemp("nginx")
    for d in ("logs", "client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / d).mkdir()
    origin, site = nginx_site(ports["nginx"], free_port(), upslot.port, test_ca.cert, test_ca.key)
    user = "user root;\n" if os.geteuid() == 0 else ""
    config = tmp / "nginx.conf"
    config.write_text(
        f"# written by tests/interop/conftest.py\n{user}daemon off;\nworker_processes 1;\n"
        f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'logs' / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    client_body_temp_path {tmp / 'client_body'};\n"
        f"    proxy_temp_path {tmp / 'proxy'};\n"
        f"    fastcgi_temp_path {tmp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {tmp / 'uwsgi'};\n"
        f"    scgi_temp_path {tmp / 'scgi'};\n"
        "    default_type application/octet-stream;\n" + textwrap.indent(site, "    ") + "}\n"
    )
    run([nginx_bin, "-t", "-p", str(tmp), "-c", str(config)])
    proc = Proc("nginx", [nginx_bin, "-p", str(tmp), "-c", str(config)], tmp / "nginx.out")
    try:
        proc.wait_port(ports["nginx"])
    except Exception:
        proc.stop()
        raise
    yield Nginx(proc, ports["nginx"], config, origin)
    proc.stop()
