"""HTTP load test: `stepdown-ml serve` against `mlflow models serve` on the same requests.

Bounded: loopback only, a fixed number of requests per scenario and a time cap, and both
servers are stopped at the end. The client is an asyncio HTTP/1.1 keep-alive client with
pre-encoded requests (one connection per simulated client), light enough to share the
machine with the server. Scenarios: 1 and 16 concurrent clients, single records and
100-record batches. MLflow's server is much slower, so its scenarios stop at the time cap.
Besides throughput and latency, each scenario reports the server's CPU time per request (all
its processes, from /proc), which other work on a shared machine disturbs much less.

    python -m benchmarks.loadtest [--requests 20000] [--workers N] [--skip-mlflow]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from stepdown_ml.core import config
from stepdown_ml.core.schema import CANDIDATE_COLUMNS
from stepdown_ml.datasets.generate import generate_transitions

BIN = Path(sys.executable).parent
BATCH = 100
PORT_LOG = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class Result:
    server: str
    clients: int
    records_per_request: int
    requests: int
    seconds: float
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    # CPU time of the server's processes (all workers) per request, user + system: what a
    # request costs the server, whatever else the machine runs (None where /proc is not).
    server_cpu_ms: float | None = None


def _records(n: int) -> list[dict]:
    frame = generate_transitions(n, seed=404)[[c.name for c in CANDIDATE_COLUMNS]]
    return json.loads(frame.to_json(orient="records"))


def _request(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _one_client(port: int, requests: list[bytes], budget: list[int], deadline: float) -> tuple:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies: list[float] = []
    errors = 0
    i = 0
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            request = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                if head[9:12] != b"200":
                    errors += 1
            except (OSError, asyncio.IncompleteReadError, AttributeError):
                errors += 1
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()
    return latencies, errors


async def _load(port: int, requests: list[bytes], clients: int, total: int, cap_s: float) -> tuple:
    budget = [total]
    started = time.perf_counter()
    parts = await asyncio.gather(
        *(
            _one_client(port, requests[c::clients] or requests, budget, started + cap_s)
            for c in range(clients)
        )
    )
    seconds = time.perf_counter() - started
    latencies = sorted(x for part in parts for x in part[0])
    return latencies, sum(part[1] for part in parts), seconds


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its descendants, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_seconds(int(child)) or 0.0 for child in children)


def measure(
    server: str,
    port: int,
    path: str,
    bodies: list[bytes],
    clients: int,
    total: int,
    cap_s: float,
    rows: int,
    pid: int | None = None,
):
    """Warm up, then ``total`` requests (or ``cap_s`` seconds) from ``clients`` connections."""
    requests = [_request(path, body) for body in bodies]
    asyncio.run(_load(port, requests, clients, min(200, total), cap_s))
    cpu_before = _cpu_seconds(pid) if pid else None
    latencies, errors, seconds = asyncio.run(_load(port, requests, clients, total, cap_s))
    cpu_after = _cpu_seconds(pid) if pid else None
    n = len(latencies)
    server_cpu = None
    if cpu_before is not None and cpu_after is not None:
        server_cpu = round((cpu_after - cpu_before) / n * 1000, 3)
    return Result(
        server=server,
        clients=clients,
        records_per_request=rows,
        requests=n,
        seconds=round(seconds, 2),
        requests_per_s=round(n / seconds, 1),
        rows_per_s=round(n * rows / seconds, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(latencies[min(n - 1, int(n * 0.99))] * 1000, 3),
        errors=errors,
        server_cpu_ms=server_cpu,
    )


@contextmanager
def running(
    argv: list[str], log: Path, ready_path: str, env: dict[str, str] | None = None, loaded: int = 0
) -> Iterator[tuple[int, int]]:
    """A server process: ``(port, pid)`` (the port from its log, or given); SIGTERM at the end.

    ``loaded``: wait for that many "loaded from" lines (one per worker of `stepdown-ml serve`).
    """
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log.open("w"), env=env)
    try:
        deadline = time.time() + 180
        port = None
        while port is None:
            found = PORT_LOG.search(log.read_text()) or re.search(r"-p (\d+)", " ".join(argv))
            port = int(found.group(1)) if found else None
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(f"{argv[:3]} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        import urllib.request

        while log.read_text().count(" loaded from ") < loaded:
            if time.time() > deadline or process.poll() is not None:
                raise RuntimeError(f"{argv[:3]} never loaded its model:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2)
                break
            except OSError:
                if time.time() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{argv[:3]} never became ready:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield port, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCENARIOS = ((1, 1), (1, 16), (BATCH, 1), (BATCH, 16))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="single-record requests per scenario")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="server workers")
    parser.add_argument("--cap", type=float, default=60.0, help="seconds at most per scenario")
    parser.add_argument("--mlflow-cap", type=float, default=15.0, help="seconds per MLflow scenario")
    parser.add_argument("--skip-mlflow", action="store_true")
    args = parser.parse_args(argv)

    records = _records(2_000)
    singles = [json.dumps(r).encode() for r in records]
    batches = [json.dumps(records[i : i + BATCH]).encode() for i in range(0, len(records), BATCH)]
    mlflow_singles = [json.dumps({"dataframe_records": [r]}).encode() for r in records]
    mlflow_batches = [
        json.dumps({"dataframe_records": records[i : i + BATCH]}).encode() for i in range(0, 2000, BATCH)
    ]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        work = Path(tmp)
        serve = [str(BIN / "stepdown-ml"), "serve", "--port", "0", "--workers", str(args.workers)]
        with running(serve, work / "serve.log", "/health", loaded=args.workers) as (port, pid):
            for rows, clients in SCENARIOS:
                total = args.requests if rows == 1 else max(1, args.requests // 20)
                bodies = singles if rows == 1 else batches
                scenario = (bodies, clients, total, args.cap, rows, pid)
                result = measure("stepdown-ml serve", port, "/predict", *scenario)
                results.append(result)
                print(results[-1], file=sys.stderr)
        if not args.skip_mlflow:
            from stepdown_ml.mlops.tracking import save_model

            saved = work / "pyfunc"
            save_model(config.PACKAGED_MODEL_DIR, saved, pd.DataFrame(records[:3]))
            env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
            port = _free_port()
            mlflow_serve = [
                str(BIN / "mlflow"),
                "models",
                "serve",
                "-m",
                str(saved),
                "--env-manager",
                "local",
            ]
            mlflow_serve += ["-h", "127.0.0.1", "-p", str(port)]
            with running(mlflow_serve, work / "mlflow.log", "/ping", env=env) as (port, pid):
                for rows, clients in SCENARIOS:
                    total = args.requests if rows == 1 else max(1, args.requests // 20)
                    bodies = mlflow_singles if rows == 1 else mlflow_batches
                    result = measure(
                        "mlflow models serve",
                        port,
                        "/invocations",
                        bodies,
                        clients,
                        total,
                        args.mlflow_cap,
                        rows,
                        pid,
                    )
                    results.append(result)
                    print(result, file=sys.stderr)
    report = {"workers": args.workers, "cores": os.cpu_count(), "results": [asdict(r) for r in results]}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
