"""Unit tests: the HTTP app's states and failure isolation, on an in-process uvicorn server."""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from stepdown_ml.core import config
from stepdown_ml.core.schema import CANDIDATE_COLUMNS
from stepdown_ml.serving import model as serving
from stepdown_ml.serving.http import ServeSettings, _parse, create_app
from stepdown_ml.serving.model import Model
from tests.conftest import candidate_record


@contextmanager
def running(load: Callable[[], Any]) -> Iterator[Callable[..., tuple[int, Any]]]:
    """The app with ``load`` as its model loader, served on a free loopback port."""
    app = create_app(ServeSettings(str(config.PACKAGED_MODEL_DIR)), load=load)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not (server.started and server.servers):
        assert time.time() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]

    def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(method, path, body=None if body is None else json.dumps(body).encode())
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()

    call.port = port  # type: ignore[attr-defined]  # for tests that speak raw HTTP
    try:
        yield call
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def ready(call: Callable[..., tuple[int, Any]]) -> Callable[..., tuple[int, Any]]:
    """``call`` once /health says the model is loaded (it loads in a thread: on a busy
    machine, after the server has started)."""
    deadline = time.time() + 30
    while call("GET", "/health")[0] != 200:
        assert time.time() < deadline, "the model did not load"
        time.sleep(0.02)
    return call


def test_health_is_503_until_the_model_is_loaded_then_200():
    release = threading.Event()

    def slow_load() -> Model:
        release.wait(timeout=30)
        return Model(config.PACKAGED_MODEL_DIR)

    with running(slow_load) as call:
        assert call("GET", "/health") == (503, {"status": "loading"})
        status, body = call("POST", "/predict", candidate_record())
        assert status == 503 and "not loaded" in body["error"]
        release.set()
        deadline = time.time() + 30
        while call("GET", "/health")[0] != 200:
            assert time.time() < deadline
            time.sleep(0.02)
        assert call("POST", "/predict", candidate_record())[0] == 200


def test_a_model_that_fails_to_load_is_reported_by_health():
    def broken() -> Model:
        raise OSError("disk gone")

    with running(broken) as call:
        deadline = time.time() + 10
        while (answer := call("GET", "/health"))[1]["status"] == "loading":
            assert time.time() < deadline
            time.sleep(0.02)
        assert answer == (503, {"status": "failed", "error": "OSError: disk gone"})


class _Crashing(Model):
    """The real model, except that one candidate id makes scoring raise."""

    def score_record(self, record):
        if record.get("candidate_id") == "boom":
            raise RuntimeError("a bug")
        return super().score_record(record)


def test_a_crash_in_one_request_is_a_500_for_it_alone():
    with running(lambda: _Crashing(config.PACKAGED_MODEL_DIR)) as serving_call:
        call = ready(serving_call)
        status, body = call("POST", "/predict", candidate_record(candidate_id="boom"))
        assert status == 500 and "internal error" in body["error"]
        assert "a bug" not in json.dumps(body)  # no internals leak to the client
        status, body = call("POST", "/predict", candidate_record(candidate_id="fine"))
        assert status == 200 and body["candidate_id"] == "fine"


def test_a_client_that_leaves_mid_body_is_a_499_in_the_log_not_a_failure(caplog):
    """A client that closes its connection before its body is sent is no error of ours: one
    access line with 499, no traceback, and the next request is served."""
    caplog.set_level(logging.INFO)
    with running(lambda: Model(config.PACKAGED_MODEL_DIR)) as serving_call:
        call = ready(serving_call)
        with socket.create_connection(("127.0.0.1", serving_call.port), timeout=10) as client:
            client.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"candid')
        deadline = time.time() + 10
        while not any('"POST /predict" 499' in r.getMessage() for r in caplog.records):
            assert time.time() < deadline, [r.getMessage() for r in caplog.records]
            time.sleep(0.02)
        status, body = call("POST", "/predict", candidate_record(candidate_id="next"))
        assert status == 200 and body["candidate_id"] == "next"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [
        r.getMessage() for r in caplog.records
    ]


@pytest.mark.parametrize(("encoding", "status"), [("gzip", 415), ("br", 415), ("identity", 200), (None, 200)])
def test_a_compressed_body_is_a_415_that_says_so(encoding, status):
    """The service reads JSON as sent: a compressed body is refused by its encoding's name
    (before, gzip bytes got a 400 about UTF-8)."""
    record = json.dumps(candidate_record()).encode()
    with running(lambda: Model(config.PACKAGED_MODEL_DIR)) as serving_call:
        ready(serving_call)
        connection = http.client.HTTPConnection("127.0.0.1", serving_call.port, timeout=10)
        try:
            headers = {} if encoding is None else {"Content-Encoding": encoding}
            body = gzip.compress(record) if encoding == "gzip" else record
            connection.request("POST", "/predict", body=body, headers=headers)
            response = connection.getresponse()
            got, answer = response.status, json.loads(response.read())
        finally:
            connection.close()
    assert got == status, answer
    if status == 415:
        assert encoding in answer["error"] and "not supported" in answer["error"]


def test_an_integer_past_64_bits_is_refused_with_its_digits_as_predict_refuses_it():
    """orjson reads such an integer as a float ("got '1e+29'"); the service shows its
    digits, the reason predict() gives for the same JSON."""
    body = json.dumps([candidate_record(current_level=10**29), candidate_record(fit_score=2**64)])
    with pytest.raises(serving.InvalidCandidateError) as caught:
        serving.predict(json.loads(body), model=config.PACKAGED_MODEL_DIR)
    with running(lambda: Model(config.PACKAGED_MODEL_DIR)) as serving_call:
        status, answer = ready(serving_call)("POST", "/predict", json.loads(body))
    assert status == 422 and answer["problems"] == caught.value.problems
    assert "100000000000000000000" in answer["problems"][0]["reason"]


def test_json_orjson_cannot_hold_is_read_and_refused_by_row_and_column_as_predict_refuses_it():
    """A number beyond a double (1e400) and an escaped lone surrogate are JSON, which orjson
    refuses: the service reads them as Python's json does, and predict()'s 422 names the row,
    the column and the value (tests/e2e/test_serve.py: the status over HTTP). What is not
    JSON (NaN, bytes that are not UTF-8) stays a 400."""
    import orjson

    from stepdown_ml.serving.http import _RequestError

    record = json.dumps(candidate_record(candidate_id="big"))
    body = "[" + record.replace('"current_level": ', '"current_level": 1e400, "x": ', 1) + ", "
    body += record.replace('"big"', '"\\ud800"', 1) + "]"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    payload = _parse(body.encode())
    assert payload == json.loads(body) and payload[0]["current_level"] == float("inf")
    with pytest.raises(serving.InvalidCandidateError) as caught:
        serving.predict(payload, model=config.PACKAGED_MODEL_DIR)
    named = {(p["row"], p["column"]) for p in caught.value.problems}
    assert named == {(1, "current_level"), (2, "candidate_id")}
    latin1 = '{"a": "é"}'.encode("latin-1")
    for not_json in (b'{"current_level": NaN}', b'{"current_level": -Infinity}', latin1):
        with pytest.raises(_RequestError) as refused:
            _parse(not_json)
        assert refused.value.status == 400


def test_a_long_integer_nested_deeper_than_pythons_json_reads_is_no_500():
    """Python's json cannot read what orjson reads at 1,000 levels: orjson's reading stands
    (an array whose item is no record: a 422 later, not a crash)."""
    body = b"[" * 1000 + b"12345678901234567890" + b"]" * 1000
    with pytest.raises(RecursionError):
        json.loads(body)
    assert isinstance(_parse(body), list)


@pytest.mark.parametrize("records", [1, 2, 300])
def test_batches_inline_and_in_a_thread_give_the_same_answers(records, served_model):
    batch = [candidate_record(candidate_id=f"c{i}", fit_score=str(1 + i % 5)) for i in range(records)]
    with running(lambda: served_model) as call:
        status, body = ready(call)("POST", "/predict", batch)
    assert status == 200
    assert body == served_model.score_records(batch)


def test_a_json_batch_is_answered_as_record_by_record(served_model, candidates, monkeypatch):
    """Typed JSON values (the column path of score_records) over HTTP: the record path's answer."""
    frame = candidates.head(150)[[c.name for c in CANDIDATE_COLUMNS]]
    batch = json.loads(frame.to_json(orient="records"))
    with running(lambda: served_model) as call:
        status, body = ready(call)("POST", "/predict", batch)
    assert status == 200
    monkeypatch.setattr(serving, "COLUMNS_FROM", 10**9)
    assert body == served_model.score_records(batch)
