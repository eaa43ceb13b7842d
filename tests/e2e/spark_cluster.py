"""A real Spark cluster on this machine, for the tests: a standalone master, two workers and a
Spark Connect server, each its own JVM process, on 127.0.0.1 and ephemeral ports.

Started by :func:`start_cluster` and stopped by :meth:`Cluster.stop` (each process group,
SIGTERM then SIGKILL), which the session fixture calls even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
WORKERS = 2
CORES_PER_WORKER = 2  # logical: the Connect server's app and one driver's app, one core each per worker
EXECUTOR_MEMORY = "640m"


def free_port() -> int:
    """A port the OS hands out for 127.0.0.1 now (the usual ephemeral-port idiom)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cluster_env(work: Path) -> dict[str, str]:
    """The environment of every process of the cluster and of the drivers that use it."""
    return {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOCAL_HOSTNAME": "localhost",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_WORKER_DIR": str(work / "worker"),
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_CONF_DIR": str(work / "conf"),  # empty: no site configuration leaks in
    }


@dataclass
class Cluster:
    master_url: str
    connect_url: str
    env: dict[str, str]
    work: Path
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every process started (newest first), whatever state it is in."""
        for _, process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n" + (self.work / f"{name}.log").read_text(errors="replace")[-3000:]
            for name, _ in self.processes
        )

    def driver_conf(self) -> list[str]:
        """spark-submit options of a test driver: small executors, no web UI."""
        return ["--conf", f"spark.executor.memory={EXECUTOR_MEMORY}", "--conf", "spark.ui.enabled=false"]


def _start(cluster: Cluster, name: str, command: list[str]) -> subprocess.Popen:
    log = open(cluster.work / f"{name}.log", "wb")  # noqa: SIM115 (the process owns it)
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=cluster.env, start_new_session=True
    )
    log.close()
    cluster.processes.append((name, process))
    return process


def _wait_for(cluster: Cluster, name: str, ready: str, timeout: float = 120) -> None:
    log = cluster.work / f"{name}.log"
    process = dict(cluster.processes)[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.25)
    raise RuntimeError(f"{name} did not start ({ready!r} not logged):\n{cluster.logs()}")


def start_cluster(
    work: Path,
    workers: int = WORKERS,
    cores: int = CORES_PER_WORKER,
    memory: str = "1536m",
    connect: bool = True,
) -> Cluster:
    """Master, workers (``cores`` and ``memory`` each) and, with ``connect``, a Spark Connect
    server, ready to take jobs; everything started is stopped on any failure."""
    for folder in ("worker", "logs", "conf"):
        (work / folder).mkdir(parents=True, exist_ok=True)
    master_port = free_port()
    connect_port = free_port()  # the Connect server's, started here or by start_connect
    cluster = Cluster(
        master_url=f"spark://127.0.0.1:{master_port}",
        connect_url=f"sc://127.0.0.1:{connect_port}",
        env=cluster_env(work),
        work=work,
    )
    spark_class = str(BIN / "spark-class")
    try:
        _start(
            cluster,
            "master",
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
             "--port", str(master_port), "--webui-port", str(free_port())],
        )  # fmt: skip
        _wait_for(cluster, "master", "I have been elected leader")
        for i in range(workers):
            _start(
                cluster,
                f"worker{i}",
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                 "--port", str(free_port()), "--webui-port", str(free_port()),
                 "--cores", str(cores), "--memory", memory,
                 "--work-dir", str(work / "worker" / str(i)), cluster.master_url],
            )  # fmt: skip
        for i in range(workers):
            _wait_for(cluster, f"worker{i}", "Successfully registered with master")
        if connect:
            start_connect(cluster, connect_port, cluster.driver_conf())
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_until_listening(cluster: Cluster, name: str, port: int, timeout: float = 120) -> None:
    process = dict(cluster.processes)[name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None:
            break
        time.sleep(0.25)
    raise RuntimeError(f"{name} is not listening on {port}:\n{cluster.logs()}")


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":  # start one by hand: python -m tests.e2e.spark_cluster /tmp/cluster
    signal.signal(signal.SIGTERM, _raise_exit)  # so that `finally` stops the cluster
    running = start_cluster(Path(sys.argv[1]))
    print(running.master_url, running.connect_url, flush=True)
    try:
        signal.pause()
    finally:
        running.stop()


def start_connect(cluster: Cluster, port: int, conf: list[str], cores: int = WORKERS) -> None:
    """A Spark Connect server on ``cluster`` (its own application, holding ``cores`` cores),
    listening on 127.0.0.1:``port``; stopped with the cluster."""
    _start(
        cluster,
        "connect",
        [str(BIN / "spark-submit"), "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
         "--name", "stepdown-connect-test", "--master", cluster.master_url,
         "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
         "--conf", f"spark.connect.grpc.binding.port={port}",
         "--conf", f"spark.cores.max={cores}",
         # As docs/SCALING.md's recipe: the scoring code imported once per executor.
         "--conf", "spark.python.daemon.module=stepdown_ml.serving.spark_daemon",
         *conf, "spark-internal"],
    )  # fmt: skip
    _wait_until_listening(cluster, "connect", port)
