"""End to end: `stepdown-ml serve` as a real process on 127.0.0.1, called over real HTTP."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stepdown_ml import predict
from stepdown_ml.core.schema import REJECTS_COLUMNS
from tests.conftest import candidate_record

pytestmark = pytest.mark.slow
CLI = str(Path(sys.executable).with_name("stepdown-ml"))
MAX_BODY = 200_000
MAX_BATCH = 500
BODY_SECONDS = 2


class Server:
    """A ``stepdown-ml serve`` process; its port is read from its own log (``--port 0``)."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [CLI, "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=log.open("w"),
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self) -> int:
        deadline = time.time() + 60
        while time.time() < deadline:
            found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", self.log.read_text())
            if found:
                return int(found.group(1))
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.1)
        raise AssertionError(f"the server did not start:\n{self.log.read_text()[-3000:]}")

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read()
            kind = response.getheader("Content-Type") or ""
            return response.status, json.loads(text) if "json" in kind else text.decode()
        finally:
            connection.close()

    def wait_ready(self, workers: int = 1) -> None:
        """Until every worker has loaded the model (each logs it), then /health says ready."""
        deadline = time.time() + 60
        while self.log.read_text().count(" loaded from ") < workers:
            assert time.time() < deadline, f"the model never loaded:\n{self.log.read_text()[-3000:]}"
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.05)
        while True:
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except ConnectionRefusedError:  # with several workers, they listen once started
                assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.time() < deadline, "the service never became ready"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """Two worker processes on the default model, with small limits to test the 413s and 408s."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    limits = ["--max-body-bytes", str(MAX_BODY), "--max-batch", str(MAX_BATCH)]
    limits += ["--body-seconds", str(BODY_SECONDS)]
    running = Server(log, "--workers", "2", *limits)
    try:
        running.wait_ready(workers=2)
        yield running
    finally:
        running.stop()


def test_single_record_equals_predict(server):
    record = candidate_record(candidate_id="one")
    status, body = server.call("POST", "/predict", record)
    assert status == 200
    assert body == predict(record)


def test_batch_equals_predict_in_input_order_with_ranks(server, candidates):
    frame = candidates.head(120).astype(object).where(candidates.head(120).notna(), None)
    records = frame.to_dict("records")
    for i, record in enumerate(records):
        record["person_id"] = f"p{i % 9}"
    status, body = server.call("POST", "/predict", records)
    assert status == 200
    expected = predict(records)
    got = pd.DataFrame(body)[list(expected.columns)]
    assert got["candidate_id"].tolist() == expected["candidate_id"].tolist()
    pd.testing.assert_series_equal(got["p_advance"], expected["p_advance"], rtol=0, atol=1e-12)
    for column in ("recommendation", "reasons", "model_version", "rank"):
        assert got[column].tolist() == expected[column].tolist(), column


def test_bad_records_are_422_with_the_rejects_a_batch_run_lists(server, served_model):
    records = [
        candidate_record(candidate_id="ok"),
        candidate_record(candidate_id="b1", current_level="11", motive="boredom"),
        candidate_record(candidate_id="b2", current_skills="Excel;SQL"),
        candidate_record(candidate_id="b3", motive="necessity"),  # necessity_avoidable required
    ]
    status, body = server.call("POST", "/predict", records)
    assert status == 422
    _, rejects = served_model.score_frame(pd.DataFrame(records, dtype=object))
    expected = {(r.row, r.column, r.reason) for r in rejects[list(REJECTS_COLUMNS)].itertuples(index=False)}
    assert {(p["row"], p["column"], p["reason"]) for p in body["problems"]} == expected
    assert {p["row"] for p in body["problems"]} == {2, 3, 4}


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"{not json", 400),
        (b'"a string"', 400),
        (b"[]", 422),
        (b"[1, 2]", 422),
        (b'{"candidate_id": {"nested": [1]}}', 422),
        (b'{"current_level": 1e400}', 422),  # JSON a double cannot hold: named, as predict() names inf
        (b'{"current_level": NaN}', 400),  # not JSON
        (b'{"current_level": 99999999999, "motive": null}', 422),
        (b"\xff\xfe", 400),
        (b"[" * 5000 + b"]" * 5000, 400),
        (b"", 400),
    ],
)
def test_hostile_bodies_get_a_4xx_never_a_500(server, raw, status):
    got, body = server.call("POST", "/predict", raw=raw)
    assert got == status, body
    assert body["error"]
    assert server.call("GET", "/health")[0] == 200


def test_limits_are_413(server):
    big = [candidate_record(candidate_id=f"c{i}") for i in range(MAX_BATCH + 1)]
    status, body = server.call("POST", "/predict", raw=json.dumps(big).encode())
    assert status == 413 and "limit" in body["error"]
    many = [{"candidate_id": "x"}] * (MAX_BATCH + 1)
    status, body = server.call("POST", "/predict", many)
    assert status == 413 and f"at most {MAX_BATCH} records" in body["error"]


@pytest.mark.parametrize("trickle", [False, True])
def test_a_body_that_does_not_arrive_in_time_is_a_408(server, trickle):
    """A client that declares more body than it sends (or trickles it) gets a 408 once the
    body deadline passes, instead of holding the request open; the service goes on."""
    body = json.dumps(candidate_record(candidate_id="slow")).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body) + 10}\r\n\r\n".encode()
        )
        started = time.monotonic()
        answer = b""
        sent = 0
        sock.settimeout(0.3)
        while time.monotonic() - started < 20 and not answer.endswith(b"}"):
            if sent < len(body) and (trickle or sent == 0):
                sock.sendall(body[sent : sent + (8 if trickle else len(body))])  # never all: 10 short
                sent += 8 if trickle else len(body)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            answer += chunk
        waited = time.monotonic() - started
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert "did not arrive within 2 s" in json.loads(payload)["error"]
    assert BODY_SECONDS - 0.5 < waited < BODY_SECONDS + 5
    assert server.call("POST", "/predict", candidate_record(candidate_id="after"))[0] == 200


def test_routes_health_metadata_docs(server, served_model):
    assert server.call("GET", "/nowhere")[0] == 404
    assert server.call("GET", "/predict")[0] == 405
    status, health = server.call("GET", "/health")
    assert (status, health["status"], health["model_version"]) == (200, "ready", served_model.version)
    status, meta = server.call("GET", "/metadata")
    assert status == 200
    assert meta["model_version"] == served_model.version
    assert meta["threshold"] == served_model.threshold
    assert meta["metrics"]["test"] == served_model.manifest["metrics"]["test"]
    assert "strong_fit" in meta["reason_codes"]
    status, spec = server.call("GET", "/openapi.json")
    assert status == 200 and "/predict" in spec["paths"]
    assert "age_band" in spec["components"]["schemas"]["Candidate"]["properties"]
    status, page = server.call("GET", "/docs")
    assert status == 200 and "candidate_id" in page


def test_one_access_log_line_per_request_with_latency(server):
    before = server.log.read_text().count('"GET /health"')
    for _ in range(3):
        server.call("GET", "/health")
    time.sleep(0.2)
    lines = re.findall(r'"GET /health" 200 \d+B \d+\.\d+ms', server.log.read_text())
    assert len(lines) - before == 3


def test_sigterm_lets_the_request_in_flight_finish(tmp_path):
    server = Server(tmp_path / "serve.log", "--workers", "1")
    try:
        server.wait_ready()
        body = json.dumps(candidate_record(candidate_id="in-flight")).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:20]
            )
            time.sleep(0.3)  # the request is being read when the signal comes
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[20:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer
        assert json.loads(payload)["candidate_id"] == "in-flight"
        assert server.process.wait(timeout=30) == 0
        assert "Shutting down" in server.log.read_text()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    finally:
        server.stop()


def test_a_bad_model_dir_is_one_line_and_exit_2(tmp_path):
    completed = subprocess.run(
        [CLI, "serve", "--port", "0", "--model-dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert completed.stderr.count("\n") == 1 and "missing" in completed.stderr
