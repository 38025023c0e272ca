"""Kamailio and SIPp on 127.0.0.1, started and stopped by a test.

``SipLab(folder, webhook_url=..., secret=...)`` starts Kamailio with ``kamailio.cfg`` (beside this
file) on a free UDP port, reporting calls to ``webhook_url`` signed with ``secret`` and sending
every INVITE to the phone port; it returns once Kamailio answers SIP. ``lab.call(...)`` places one
call: a SIPp phone (a UAS scenario) on the phone port and a SIPp caller (a UAC scenario) calling
through Kamailio; it returns the call's SIP Call-ID once both ended as their scenarios say, and
raises AssertionError with the logs otherwise (its SIPp processes are ended either way).
``lab.stop()`` ends Kamailio.

Each process writes into a folder of its own under ``folder`` (its output, SIPp's message and
error traces); a failure quotes them. Nothing needs root: every port is a free one above 1024.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from crmcore.testing import free_port

__all__ = ["SipLab", "missing", "INSTALL"]

HERE = Path(__file__).parent
#: The Debian packages of the lab: Kamailio and the modules kamailio.cfg loads, and SIPp.
PACKAGES = {"kamailio": "kamailio", "http_client.so": "kamailio-utils-modules", "crypto.so": "kamailio-tls-modules",
            "jansson.so": "kamailio-extra-modules", "sipp": "sip-tester"}
INSTALL = "apt-get install -y " + " ".join(dict.fromkeys(PACKAGES.values()))
#: Longest a call may take; SIPp fails (rather than hangs) past it.
CALL_TIMEOUT = 30
#: Every SIPp run: no keyboard, traces of what went wrong, and an error past CALL_TIMEOUT.
SIPP_OPTIONS = ["-nostdin", "-trace_err", "-trace_msg", "-timeout", f"{CALL_TIMEOUT}s", "-timeout_error"]
#: Kamailio lives in sbin, often not on a user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def _kamailio() -> str | None:
    return shutil.which("kamailio", path=_SEARCH_PATH)


def _module_dir(kamailio: str) -> Path | None:
    """Where this Kamailio loads its modules from (``kamailio -h`` says)."""
    usage = subprocess.run([kamailio, "-h"], capture_output=True, text=True, timeout=30)
    found = re.search(r"Modules search path \(default: ([^)]+)\)", usage.stdout + usage.stderr)
    return Path(found.group(1).strip()) if found else None


def missing() -> str | None:
    """What the lab lacks and how to install it, or None when everything is there."""
    absent: list[str] = []
    kamailio = _kamailio()
    if kamailio is None:
        absent.append(PACKAGES["kamailio"])
    else:
        modules = _module_dir(kamailio)
        absent += [package for name, package in PACKAGES.items()
                   if name.endswith(".so") and (modules is None or not (modules / name).exists())]
    if shutil.which("sipp") is None:
        absent.append(PACKAGES["sipp"])
    if not absent:
        return None
    return f"the SIP tests need {', '.join(absent)} (Debian packages; .ci/run installs them): {INSTALL}"


def _udp_bound(port: int) -> bool:
    """Whether a process listens on this UDP port (Linux: /proc/net/udp)."""
    suffix = f":{port:04X}"
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        if any(row.split()[1].endswith(suffix) for row in rows):
            return True
    return False


class _Process:
    """A program run in its own folder and session, its output in ``<name>.log`` there."""

    def __init__(self, name: str, args: list[str], folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.name, self.folder = name, folder
        with open(folder / f"{name}.log", "wb") as log:
            self.popen = subprocess.Popen(args, cwd=folder, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int | None:
        """Its exit status, or None when it is still running after ``timeout`` seconds."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Ends it and whatever it forked (Kamailio's workers): its own process group."""
        if not self.alive():
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            if self.wait(10) is not None:
                return


class SipLab:
    """Kamailio between SIPp callers and a SIPp phone; see the module's docstring."""

    def __init__(self, folder: Path, *, webhook_url: str, secret: str):
        self.folder = folder
        self.port = free_port()
        #: The extension's phone: one SIPp UAS a call, each on this port.
        self.phone_port = free_port()
        home = folder / "kamailio"
        home.mkdir(parents=True, exist_ok=True)
        # The defines kamailio.cfg reads (strings, quoted).
        defines = {"WEBHOOK_URL": webhook_url, "WEBHOOK_SECRET": secret,
                   "PHONE_URI": f"sip:127.0.0.1:{self.phone_port}"}
        args = [_kamailio() or "kamailio", "-f", str(HERE / "kamailio.cfg"), "-DD", "-E", "-Y", str(home), "-w",
                str(home), "-l", f"udp:127.0.0.1:{self.port}", "-m", "32", "-M", "8"]
        for name, value in defines.items():
            args += ["-A", f'{name}="{value}"']
        self.kamailio = _Process("kamailio", args, home)
        try:
            self._wait_for_kamailio(time.monotonic() + 30)
        except BaseException:
            self.stop()
            raise

    def _wait_for_kamailio(self, deadline: float) -> None:
        """Until Kamailio answers an OPTIONS (its workers run); its log if it exits or never does."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.2)
            local = sock.getsockname()[1]
            probe = "\r\n".join([
                f"OPTIONS sip:127.0.0.1:{self.port} SIP/2.0",
                f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-{uuid.uuid4().hex}",
                "From: <sip:probe@127.0.0.1>;tag=probe", f"To: <sip:127.0.0.1:{self.port}>",
                f"Call-ID: probe-{uuid.uuid4().hex}", "CSeq: 1 OPTIONS", "Max-Forwards: 70", "Content-Length: 0",
                "", ""]).encode()
            while True:
                if not self.kamailio.alive():
                    raise AssertionError(f"Kamailio exited at start\n{self.report('kamailio')}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"Kamailio does not answer SIP on port {self.port}\n{self.report('kamailio')}")
                sock.sendto(probe, ("127.0.0.1", self.port))
                try:
                    if sock.recv(4096).startswith(b"SIP/2.0 200"):
                        return
                except TimeoutError:
                    continue

    def call(self, name: str, *, phone: str, caller: str, number: str, extension: str = "101",
             pause_ms: int = 0) -> str:
        """One call from ``number`` to ``extension``: ``phone`` (a UAS scenario file here) answers
        it as it says, ``caller`` (a UAC scenario) places it and pauses ``pause_ms`` where it says
        (talking, or letting it ring). The call's SIP Call-ID."""
        call_id = f"{name}-{uuid.uuid4().hex[:12]}@crm-sip-test"
        home = self.folder / name
        sipp = shutil.which("sipp") or "sipp"
        answering = _Process("phone", [sipp, "-sf", str(HERE / phone), "-i", "127.0.0.1", "-p", str(self.phone_port),
                                       "-m", "1", *SIPP_OPTIONS], home / "phone")
        calling = None
        try:
            deadline = time.monotonic() + 30
            while not _udp_bound(self.phone_port):
                if not answering.alive() or time.monotonic() > deadline:
                    raise AssertionError(f"the SIPp phone did not start\n{self.report(name)}")
                time.sleep(0.02)
            calling = _Process("caller", [sipp, f"127.0.0.1:{self.port}", "-sf", str(HERE / caller), "-i", "127.0.0.1",
                                          "-p", str(free_port()), "-s", extension, "-key", "caller", number,
                                          "-cid_str", call_id, "-d", str(pause_ms), "-m", "1", *SIPP_OPTIONS],
                               home / "caller")
            caller_status = calling.wait(CALL_TIMEOUT + 15)
            phone_status = answering.wait(15)
        finally:
            for process in (calling, answering):
                if process is not None:
                    process.stop()
        if caller_status != 0 or phone_status != 0:
            raise AssertionError(f"call {name}: the SIPp caller ended with {caller_status}, the phone with "
                                 f"{phone_status} (0: as the scenario says; None: still running)\n"
                                 f"{self.report(name, 'kamailio')}")
        return call_id

    def kamailio_log(self) -> str:
        return (self.kamailio.folder / "kamailio.log").read_text(errors="replace")

    def report(self, *names: str) -> str:
        """The logs of these folders (all by default), the end of each, for a failure's message."""
        folders = [self.folder / name for name in names] if names else [self.folder]
        parts = []
        for folder in folders:
            for path in sorted(folder.rglob("*.log")):
                text = path.read_text(errors="replace")
                parts.append(f"--- {path.relative_to(self.folder)}\n{text[-6000:]}")
        return "\n".join(parts) or "(no logs)"

    def stop(self) -> None:
        self.kamailio.stop()
