"""A local Janus gateway for tests and benchmarks: its own config, loopback only, bounded.

Debian's ``janus`` package loads every plugin and transport it ships (SIP, Lua, MQTT,
WebSockets, ...) from ``/etc/janus``. What Vivify needs is one plugin (VideoRoom) and one
transport (plain HTTP), so :class:`LocalJanus` writes a config folder of its own whose plugin and
transport folders hold links to those two libraries only: nothing else can load, whatever the
package adds later. The HTTP API binds 127.0.0.1 on a free port, ICE gathers on the loopback
interface only, and a random ``admin_key`` guards room creation (the avatar server holds it;
a viewer can only subscribe). The process is killed when the context exits, and a start that
does not answer within ``start_timeout_s`` is an error, not a hang.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from vivify.streamer.net import free_port, wait_ready

LIB_DIR = Path("/usr/lib/x86_64-linux-gnu/janus")
PLUGIN = "libjanus_videoroom.so"
TRANSPORT = "libjanus_http.so"


def janus_binary() -> str | None:
    """The ``janus`` executable on PATH (Debian package ``janus``), or None."""
    return shutil.which("janus")


def _library_dir() -> Path:
    """Where the package put its plugins (multiarch path differs off amd64)."""
    if LIB_DIR.is_dir():
        return LIB_DIR
    for candidate in Path("/usr/lib").glob("*/janus"):
        if (candidate / "plugins" / PLUGIN).exists():
            return candidate
    raise FileNotFoundError(f"no Janus plugins folder with {PLUGIN} under /usr/lib")


@dataclass
class LocalJanus:
    """``with LocalJanus() as janus: janus.url`` — a Janus HTTP API URL for this test or run."""

    port: int = 0  # 0 = a free one
    rtp_ports: tuple[int, int] = (40000, 49999)
    debug_level: int = 3  # warnings and errors in the log, not every ICE step
    session_timeout_s: int = 60
    start_timeout_s: float = 15.0
    admin_key: str = field(default_factory=lambda: secrets.token_hex(16))
    folder: Path | None = None  # None = a temporary folder, removed on exit
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    @property
    def log_path(self) -> Path:
        assert self.folder is not None
        return self.folder / "janus.log"

    def write_config(self) -> Path:
        """The config folder: janus.jcfg, the HTTP transport, VideoRoom, and the links."""
        if self.folder is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vivify-janus-")
            self.folder = Path(self._tmp.name)
        if not self.port:
            self.port = free_port()
        lib = _library_dir()
        root = self.folder
        for sub, name in (("plugins", PLUGIN), ("transports", TRANSPORT)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            link = root / sub / name
            if not link.exists():
                link.symlink_to(lib / sub / name)
        for sub in ("events", "loggers"):
            (root / sub).mkdir(exist_ok=True)
        (root / "janus.jcfg").write_text(f"""general: {{
  configs_folder = "{root}"
  plugins_folder = "{root}/plugins"
  transports_folder = "{root}/transports"
  events_folder = "{root}/events"
  loggers_folder = "{root}/loggers"
  debug_level = {self.debug_level}
  admin_secret = "{secrets.token_hex(16)}"
  session_timeout = {self.session_timeout_s}
  server_name = "vivify-local-janus"
}}
media: {{
  ipv6 = false
  rtp_port_range = "{self.rtp_ports[0]}-{self.rtp_ports[1]}"
}}
nat: {{
  nice_debug = false
  ice_enforce_list = "lo"
  ignore_mdns = true
}}
plugins: {{
}}
transports: {{
}}
events: {{
  broadcast = false
}}
""")
        (root / "janus.transport.http.jcfg").write_text(f"""general: {{
  json = "compact"
  base_path = "/janus"
  http = true
  port = {self.port}
  ip = "127.0.0.1"
  https = false
}}
admin: {{
  admin_http = false
  admin_https = false
}}
""")
        (root / "janus.plugin.videoroom.jcfg").write_text(f"""general: {{
  admin_key = "{self.admin_key}"
}}
""")
        return root

    def start(self) -> LocalJanus:
        binary = janus_binary()
        if binary is None:
            raise FileNotFoundError("the janus binary is missing: apt-get install janus")
        root = self.write_config()
        with (root / "janus.stderr").open("wb") as stderr:  # what fails before the log opens
            self.process = subprocess.Popen(
                [binary, "-F", str(root), "-C", str(root / "janus.jcfg"), "-o", "-N",
                 "-L", str(self.log_path)],
                stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None

        def videoroom_loaded() -> bool | None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(f"{self.url}/info", timeout=1.0)
                if r.status_code == 200 and "janus.plugin.videoroom" in r.json().get(
                        "plugins", {}):
                    return True
            return None

        if wait_ready(self.process, videoroom_loaded, self.start_timeout_s, 0.05):
            return
        if self.process.poll() is not None:
            raise RuntimeError(f"janus exited with {self.process.returncode}: "
                               f"{self.log_tail()}")
        self.stop()
        raise TimeoutError(f"janus did not answer within {self.start_timeout_s} s: "
                           f"{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self.folder is None:
            return ""
        text = ""
        for name in ("janus.stderr", "janus.log"):
            with contextlib.suppress(OSError):
                text += (self.folder / name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; safe to call twice."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.folder = None

    def __enter__(self) -> LocalJanus:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
