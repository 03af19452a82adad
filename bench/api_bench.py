"""Load test of a service's API on loopback: latency percentiles and throughput.

Starts `skylapse serve <service>` as a separate process (so the client does not share its GIL)
on a free 127.0.0.1 port with a fresh data folder, then sends a bounded number of requests per
endpoint with a bounded concurrency and a time limit, and prints p50 / p99 latency and
requests per second. Only loopback is ever contacted.

    .venv/bin/python bench/api_bench.py                      # processing: /health, /metrics
    .venv/bin/python bench/api_bench.py --service capture    # /status, /metrics, /health
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from skylapse.api.server import free_port

ENDPOINTS = {
    "processing": ["/health", "/metrics"],
    "capture": ["/status", "/metrics", "/health"],
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def load(
    url: str, token: str, requests: int, concurrency: int, limit_s: float
) -> tuple[list[float], int, float]:
    """Send up to ``requests`` GETs, ``concurrency`` at a time, for at most ``limit_s``."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=10) as client:
        for _ in range(min(20, requests)):  # warm-up: connections, caches
            await client.get(url)
        deadline = time.perf_counter() + limit_s
        next_index = 0

        async def worker() -> None:
            nonlocal next_index, errors
            while next_index < requests and time.perf_counter() < deadline:
                next_index += 1
                t0 = time.perf_counter()
                try:
                    r = await client.get(url)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return latencies, errors, wall


def wait_ready(base: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not become ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=sorted(ENDPOINTS), default="processing")
    parser.add_argument("--requests", type=int, default=2000, help="per endpoint (bounded)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit-s", type=float, default=30.0, help="time limit per endpoint")
    args = parser.parse_args(argv)
    requests = max(1, min(args.requests, 100_000))
    concurrency = max(1, min(args.concurrency, 256))

    token = secrets.token_urlsafe(24)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SKYLAPSE_API_TOKEN": token, "SKYLAPSE_DATA_DIR": tmp}
        cmd = [
            sys.executable,
            "-m",
            "skylapse.cli",
            "serve",
            args.service,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        if args.service == "processing":
            cmd += ["--workers", "0", "--data", str(Path(tmp) / "data")]
        else:  # the simulated camera, no weather look-ups, the plan off: the API alone
            config = Path(tmp) / "skylapse.yaml"
            config.write_text(
                "weather: {enabled: false}\n"
                "capture: {camera: simulated, resolution: [640, 360], "
                "unattended: false}\n"
            )
            cmd += ["--data", str(Path(tmp) / "buffer"), "--config", str(config)]
        log = open(Path(tmp) / "server.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(base, proc)
            print(
                f"{args.service} service on {base}: {requests} requests per endpoint, "
                f"concurrency {concurrency}, at most {args.limit_s:.0f} s each"
            )
            print(
                f"{'endpoint':<10} {'n':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'max ms':>8} {'req/s':>8}"
            )
            for path in ENDPOINTS[args.service]:
                lat, errors, wall = asyncio.run(
                    load(base + path, token, requests, concurrency, args.limit_s)
                )
                print(
                    f"{path:<10} {len(lat):>6} {errors:>6} {statistics.median(lat):>8.2f} "
                    f"{percentile(lat, 99):>8.2f} {max(lat):>8.2f} {len(lat) / wall:>8.0f}"
                )
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
