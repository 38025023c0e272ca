"""HTTP load on loopback: ``wrk`` when installed, else an httpx async client.

Each request path is drawn at random (seeded) from a list of paths, so reads hit random records.
Returns requests/s, latency percentiles and the count of non-2xx answers (which invalidate a run).
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def _lua(paths: list[str], seed: int, headers: dict[str, str] | None = None) -> str:
    items = ",".join('"' + p.replace('"', '') + '"' for p in paths)
    sent = ",".join(f'["{k}"] = "{v}"' for k, v in (headers or {}).items() if '"' not in k + v)
    return (
        f"local paths = {{{items}}}\n"
        f"local n = #paths\n"
        f"local headers = {{{sent}}}\n"
        f"math.randomseed({seed})\n"
        "request = function()\n"
        "  return wrk.format('GET', paths[math.random(1, n)], headers)\n"
        "end\n"
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * _UNITS[unit]


def run_wrk(base: str, paths: list[str], seconds: float, connections: int, seed: int = 1,
            headers: dict[str, str] | None = None) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(paths, seed, headers))
    try:
        proc = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script.name, base],
            capture_output=True, text=True, timeout=seconds + 60,
        )
    finally:
        Path(script.name).unlink(missing_ok=True)
    out = proc.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    return {
        "tool": "wrk", "rps": rps, "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "p50_ms": lat.get("50"), "p90_ms": lat.get("90"), "p99_ms": lat.get("99"),
    }


async def _httpx(base: str, paths: list[str], seconds: float, connections: int, seed: int,
                 headers: dict[str, str] | None = None) -> dict:
    import httpx

    rnd = random.Random(seed)
    latencies: list[float] = []
    bad = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=headers) as client:
        async def worker() -> None:
            nonlocal bad
            while time.perf_counter() < deadline:
                path = rnd.choice(paths)
                start = time.perf_counter()
                response = await client.get(path)
                latencies.append((time.perf_counter() - start) * 1000)
                if not 200 <= response.status_code < 400:
                    bad += 1
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None
    return {"tool": "httpx", "rps": len(latencies) / elapsed, "requests": len(latencies), "non_2xx": bad,
            "socket_errors": 0, "p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99)}


def run_load(base: str, paths: list[str], seconds: float, connections: int, seed: int = 1,
             headers: dict[str, str] | None = None) -> dict:
    """``headers`` go with every request (e.g. ``Authorization``)."""
    if have_wrk():
        return run_wrk(base, paths, seconds, connections, seed, headers)
    return asyncio.run(_httpx(base, paths, seconds, connections, seed, headers))
