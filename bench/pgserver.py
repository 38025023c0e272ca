"""A throw-away PostgreSQL server for the benchmark: initdb in a temp dir, a free loopback port,
run as the ``postgres`` OS user when we are root; ``stop()`` removes everything."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def find_bin() -> Path:
    for folder in [os.environ.get("BENCH_PG_BIN", ""), "/usr/lib/postgresql/15/bin",
                   *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if folder and (Path(folder) / "initdb").exists():
            return Path(folder)
    raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) not found; set BENCH_PG_BIN")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = find_bin()
        self.dir: Path | None = None
        self.port = 0

    def _as_owner(self, args: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return args
        return ["runuser", "-u", "postgres", "--", *args]

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(prefix="crm-bench-pg-"))
        if os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.dir, 0o700)
        data = self.dir / "data"
        subprocess.run(self._as_owner([
            str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        ]), check=True, capture_output=True)
        for _ in range(5):
            self.port = free_port()
            # Durability off (fsync, synchronous_commit): a benchmark of CPU and query plans,
            # the same for crmcore and the raw baseline.
            options = " ".join([
                f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.dir}",
                "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                "-c shared_buffers=512MB", "-c max_wal_size=4GB", "-c max_connections=100",
            ])
            proc = subprocess.run(self._as_owner([
                str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"),
                "-o", options, "-w", "-t", "60", "start",
            ]), capture_output=True, text=True)
            if proc.returncode == 0:
                return self.url()
        raise RuntimeError(f"PostgreSQL did not start: {proc.stdout}{proc.stderr}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.dir is None:
            return
        if (self.dir / "data" / "postmaster.pid").exists():
            subprocess.run(self._as_owner([
                str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop",
            ]), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
