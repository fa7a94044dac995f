"""What an outsider or a broken neighbour can send the predictor, against a real
`python -m serving` process and a real `mlflow server`: nothing may take the model down,
stall it, or grow its memory. Each load phase is bounded in count and time."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime
import ipaddress
import itertools
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest
import requests
import urllib3
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

from tests.serving.test_predictor_process import (
    ROWS,
    SERVED_NAME,
    Predictor,
    Registered,
    infer_body,
    register_with_training,
    start_predictor,
)
from tests.support import MlflowServer, wait_until

pytestmark = pytest.mark.integration

INFER = f"/v2/models/{SERVED_NAME}/infer"


@pytest.fixture(scope="module")
def registered(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Registered:
    name = f"bc-hostile-{uuid.uuid4().hex[:8]}"
    return register_with_training(
        mlflow_server, name, tmp_path_factory.mktemp("train") / "train.log"
    )


def ready_predictor(registered: Registered, log: Path, flags: tuple[str, ...] = ()) -> Predictor:
    running = start_predictor(
        f"models:/{registered.name}@champion", registered.server.url, log, flags
    )
    try:
        wait_until(
            lambda: running.ready() or not running.process.alive(), 120, "the predictor to be ready"
        )
        assert running.ready(), running.process.log()
    except BaseException:
        running.process.stop()
        raise
    return running


@pytest.fixture(scope="module")
def predictor(
    registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Predictor]:
    running = ready_predictor(registered, tmp_path_factory.mktemp("predictor") / "predictor.log")
    try:
        yield running
    finally:
        running.process.stop()


def assert_still_serving(predictor: Predictor) -> None:
    assert predictor.get("/v2/health/ready").status_code == 200
    response = predictor.post(INFER, json=infer_body(ROWS))
    assert response.status_code == 200, response.text
    assert [o["data"] for o in response.json()["outputs"] if o["name"] == "label"] == [[0, 1]]


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(address, port) of each listening socket; an IPv4-mapped IPv6 address (gRPC binds
    127.0.0.1 as ::ffff:127.0.0.1) as the IPv4 address it stands for."""

    def plain(ip: str) -> str:
        address = ipaddress.ip_address(ip)
        mapped = getattr(address, "ipv4_mapped", None)
        return str(mapped or address)

    return {
        (plain(c.laddr.ip), c.laddr.port)
        for c in psutil.Process(pid).connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


# --- 1. the model repository extension is not mounted; --host applies ------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v2/repository/models/{SERVED_NAME}/unload"),
        ("POST", f"/v2/repository/models/{SERVED_NAME}/load"),
        ("GET", "/v2/repository/index"),
        ("POST", "/v2/repository/index"),
    ],
)
def test_the_repository_extension_answers_404_and_the_model_stays_served(
    predictor: Predictor, method: str, path: str
) -> None:
    response = requests.request(method, predictor.http + path, timeout=10)

    assert response.status_code == 404
    assert "model repository extension is not served" in response.json()["error"]
    assert_still_serving(predictor)


def test_grpc_repository_calls_are_unimplemented_and_the_model_stays_ready(
    predictor: Predictor,
) -> None:
    async def call() -> tuple[list[grpc.StatusCode], bool]:
        codes = []
        async with grpc.aio.insecure_channel(predictor.grpc) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            for rpc, request in (
                (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest),
                (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await rpc(request(model_name=SERVED_NAME), timeout=10)
                codes.append(caught.value.code())
            ready = await stub.ModelReady(pb.ModelReadyRequest(name=SERVED_NAME), timeout=10)
        return codes, ready.ready

    codes, ready = asyncio.run(call())

    assert codes == [grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNIMPLEMENTED]
    assert ready is True
    assert_still_serving(predictor)


def test_server_metadata_advertises_no_repository_extension(predictor: Predictor) -> None:
    body = predictor.get("/v2").json()

    assert "model_repository_extension" not in body["extensions"]
    assert body["name"]


def test_by_default_both_servers_listen_on_every_interface(predictor: Predictor) -> None:
    http_port = int(predictor.http.rsplit(":", 1)[1])
    grpc_port = int(predictor.grpc.rsplit(":", 1)[1])

    addresses = listening_addresses(predictor.process.popen.pid)

    assert ("0.0.0.0", http_port) in addresses
    assert ("::", grpc_port) in addresses


@pytest.mark.parametrize("how", ["flag", "env"])
def test_host_binds_both_servers_to_that_address_only(
    registered: Registered, tmp_path: Path, how: str
) -> None:
    flags = ("--host", "127.0.0.1") if how == "flag" else ()
    env = {"HOST": "127.0.0.1"} if how == "env" else {}
    running = start_predictor(
        f"models:/{registered.name}@champion",
        registered.server.url,
        tmp_path / "p.log",
        flags,
        env=env,
    )
    try:
        http_port = int(running.http.rsplit(":", 1)[1])
        grpc_port = int(running.grpc.rsplit(":", 1)[1])
        wait_until(
            lambda: (
                len(listening_addresses(running.process.popen.pid)) >= 2
                or not running.process.alive()
            ),
            60,
            "both servers to listen",
        )
        ports = {
            port: ip
            for ip, port in listening_addresses(running.process.popen.pid)
            if port in (http_port, grpc_port)
        }
        assert ports == {http_port: "127.0.0.1", grpc_port: "127.0.0.1"}
    finally:
        running.process.stop()


# --- 4. the request head is bounded --------------------------------------------------------


def test_a_head_past_the_byte_limit_is_a_431_with_a_v2_error(predictor: Predictor) -> None:
    response = requests.get(
        predictor.http + "/v2/health/ready", timeout=10, headers={"x-big": "a" * 40_000}
    )

    assert response.status_code == 431
    assert "request head exceeds 32768 bytes" in response.json()["error"]
    assert response.headers["connection"] == "close"
    assert_still_serving(predictor)


def test_a_head_past_the_header_count_is_a_431(predictor: Predictor) -> None:
    headers = {f"x-h{i}": "1" for i in range(150)}

    response = requests.get(predictor.http + "/v2/health/ready", timeout=10, headers=headers)

    assert response.status_code == 431
    assert "more than 100 header fields" in response.json()["error"]
    assert_still_serving(predictor)


def test_headers_under_the_limits_are_served(predictor: Predictor) -> None:
    headers = {f"x-h{i}": "b" * 200 for i in range(90)}  # 90 fields, ~20 KB

    response = predictor.post(INFER, json=infer_body(ROWS), headers=headers)

    assert response.status_code == 200


def send_unfinished_head(port: int, total: int, chunk: int = 64 * 1024) -> bytes:
    """Send a request line and one header value of `total` bytes that never ends; return
    what the server answered (b"" when the connection was cut before an answer)."""
    piece = b"a" * chunk
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: ")
            for _ in range(total // chunk):
                sock.sendall(piece)
        except OSError:
            pass  # the server closed: the rest of the head was refused
        try:
            return sock.recv(4096)
        except OSError:
            return b""


def test_many_unfinished_huge_heads_leave_memory_flat(predictor: Predictor) -> None:
    process = psutil.Process(predictor.process.popen.pid)
    port = int(predictor.http.rsplit(":", 1)[1])
    before = process.memory_info().rss

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: send_unfinished_head(port, 32 * 1024 * 1024), range(8)))
    grown = process.memory_info().rss - before
    print(f"RSS {before / 2**20:.0f} MB before, grown by {grown / 2**20:.1f} MB")

    assert grown < 24 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MB"
    # Each was cut off long before its 32 MB: an answer, if it arrived, is the 431.
    assert all(a == b"" or a.startswith(b"HTTP/1.1 431 ") for a in answers), answers
    assert_still_serving(predictor)


def exchange(port: int, *parts: bytes) -> bytes:
    """Send `parts` as separate writes (a pause between them), then read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index, part in enumerate(parts):
            if index:
                time.sleep(0.05)
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            received = sock.recv(65536)
            if not received:
                break
            answer += received
        return answer


def test_a_head_whose_end_straddles_two_reads_is_served(predictor: Predictor) -> None:
    port = int(predictor.http.rsplit(":", 1)[1])

    answer = exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r", b"\n")

    assert answer.startswith(b"HTTP/1.1 200 ")


def test_a_body_in_the_same_read_as_its_head_does_not_count_toward_the_head(
    predictor: Predictor,
) -> None:
    port = int(predictor.http.rsplit(":", 1)[1])
    body = json.dumps(infer_body([ROWS[0]] * 32)).encode()
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Pad: {'p' * 30_000}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    assert len(head) < 32 * 1024 < len(head + body)  # one write, past the head's limit

    answer = exchange(port, head + body)

    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


# --- 9. SIGTERM under load drains --------------------------------------------------------


@dataclass
class KeepAliveClient:
    """One keep-alive connection sending requests in a loop until the server closes it."""

    url: str
    ok: int = 0
    lost: list[str] = field(default_factory=list)
    closed_cleanly: bool = False

    def run(self, stop: threading.Event, deadline: float) -> None:
        body = json.dumps(infer_body(ROWS))
        with requests.Session() as session:
            while not stop.is_set() and time.monotonic() < deadline:
                try:
                    response = session.post(self.url, data=body, timeout=10)
                except requests.ConnectionError as e:
                    # Refused on a new connection: never sent (the server stopped
                    # accepting, as it should). Anything else was sent and lost.
                    if isinstance(e.args[0], urllib3.exceptions.MaxRetryError) and isinstance(
                        e.args[0].reason, urllib3.exceptions.NewConnectionError
                    ):
                        return
                    self.lost.append(repr(e))
                    return
                if response.status_code != 200:
                    self.lost.append(f"{response.status_code}: {response.text[:200]}")
                    return
                self.ok += 1
                if response.headers.get("connection") == "close":
                    self.closed_cleanly = True
                    return


def test_sigterm_under_load_finishes_every_request_and_closes_connections_cleanly(
    registered: Registered, tmp_path: Path
) -> None:
    running = ready_predictor(registered, tmp_path / "p.log")
    clients = [KeepAliveClient(running.http + INFER) for _ in range(16)]
    stop = threading.Event()
    deadline = time.monotonic() + 20
    threads = [threading.Thread(target=c.run, args=(stop, deadline)) for c in clients]
    try:
        for thread in threads:
            thread.start()
        wait_until(lambda: all(c.ok >= 3 for c in clients), 15, "every client to be served")
        running.process.popen.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        exit_code = running.process.popen.wait(25)
        took = time.monotonic() - signalled
    finally:
        stop.set()
        running.process.stop()

    assert [c.lost for c in clients] == [[]] * 16
    assert all(c.closed_cleanly for c in clients), [c.closed_cleanly for c in clients]
    assert exit_code == 0, running.process.log()
    assert took < 30, f"exit took {took:.1f}s, past the 30 s grace period"


# --- 12. gRPC: thousands of calls in flight on one connection -----------------------------


def test_2000_grpc_calls_in_flight_on_one_connection_are_all_answered(
    predictor: Predictor,
) -> None:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="features",
        datatype="FP64",
        shape=[2, 30],
        contents=pb.InferTensorContents(fp64_contents=[v for row in ROWS for v in row]),
    )
    request = pb.ModelInferRequest(model_name=SERVED_NAME, inputs=[tensor])

    async def burst() -> dict[str, int]:
        async with grpc.aio.insecure_channel(predictor.grpc) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            await stub.ServerReady(pb.ServerReadyRequest(), timeout=10)

            async def one() -> str:
                try:
                    await stub.ModelInfer(request, timeout=60)
                except grpc.aio.AioRpcError as e:
                    return e.code().name
                return "OK"

            codes = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(2000))), 90)
        return dict(collections.Counter(codes))

    assert asyncio.run(burst()) == {"OK": 2000}


# --- 11. a permanently bad artifact: logged once, retried slowly ----------------------------


def register_truncated_copy(registered: Registered, tmp_path: Path, alias: str) -> str:
    """A new version of the registered model whose model files (skops, and its ONNX copy)
    are cut in half, as a broken upload leaves them, under `alias`; returns the version."""
    import mlflow.artifacts
    from mlflow.tracking import MlflowClient

    url = registered.server.url
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    location = client.get_model_version_download_uri(registered.name, registered.version)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(tmp_path / "download"), tracking_uri=url
        )
    )
    cut = [f for f in local.rglob("*") if f.suffix in (".skops", ".onnx")]
    assert any(f.suffix == ".skops" for f in cut), sorted(local.rglob("*"))
    for model_file in cut:
        model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    run = client.create_run(client.get_run(registered.run_id).info.experiment_id)
    client.log_artifacts(run.info.run_id, str(local), "model")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(
        registered.name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    ).version
    client.set_registered_model_alias(registered.name, alias, version)
    return str(version)


def test_a_truncated_artifact_is_logged_once_retried_slowly_and_served_once_fixed(
    registered: Registered, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    alias = f"broken-{uuid.uuid4().hex[:6]}"
    bad = register_truncated_copy(registered, tmp_path, alias)
    running = start_predictor(
        f"models:/{registered.name}@{alias}",
        registered.server.url,
        tmp_path / "p.log",
        env={
            "LOG_LEVEL": "DEBUG",
            "LOAD_RETRY_INITIAL_SECONDS": "0.2",
            "LOAD_RETRY_MAX_SECONDS": "0.4",
            "LOAD_RETRY_INVALID_MAX_SECONDS": "1.6",
        },
    )
    try:
        attempts = " cannot be served, "
        wait_until(lambda: running.process.log().count(attempts) >= 5, 90, "five attempts")
        lines = [line for line in running.process.log().splitlines() if attempts in line]
        ready = running.get("/v2/health/ready")
        infer = running.post(INFER, json=infer_body(ROWS))

        # Fixed: the alias moves back to the good version, and the next attempt serves it.
        url = registered.server.url
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        client.set_registered_model_alias(registered.name, alias, registered.version)
        wait_until(lambda: running.ready() or not running.process.alive(), 60, "ready")
        served = running.post(INFER, json=infer_body(ROWS)).json()
        log = running.process.log()
    finally:
        running.process.stop()

    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, lines
    assert f"models:/{registered.name}/{bad} cannot be loaded" in errors[0]
    assert all(" DEBUG " in line for line in lines if line not in errors)
    assert "Traceback" not in log
    stamps = [datetime.datetime.fromisoformat(line[:23]) for line in lines]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    assert gaps[-1] > 1.2, gaps  # the backoff grew to the cap (1.6 s) ...
    assert max(gaps) < 1.6 + 10, gaps  # ... and stopped there (plus a load attempt's time)
    assert ready.status_code == 503 and infer.status_code == 503
    assert "cannot be loaded" in infer.json()["error"]
    assert served["model_version"] == registered.version


# --- 3. expensive bodies do not stall the event loop ---------------------------------------

BODY_LIMIT = 4 * 1024 * 1024 - 1024  # just inside the default MAX_BODY_BYTES


def nested_body(depth: int) -> bytes:
    """Arrays nested `depth` deep, repeated up to the body limit: millions of lists."""
    element = "[" * depth + "1" + "]" * depth
    count = (BODY_LIMIT - 200) // (len(element) + 1)
    data = ",".join([element] * count)
    return (
        '{"inputs":[{"name":"features","shape":[1,30],"datatype":"FP64","data":[' + data + "]}]}"
    ).encode()


def flat_body() -> bytes:
    """The largest body of plain numbers: the most a parse can cost without nesting."""
    count = (BODY_LIMIT - 200) // 20
    data = ",".join(["0.12345678901234567"] * count)
    return (
        '{"inputs":[{"name":"features","shape":[1,30],"datatype":"FP64","data":[' + data + "]}]}"
    ).encode()


def test_ready_answers_within_100_ms_while_clients_send_worst_case_bodies(
    predictor: Predictor,
) -> None:
    bodies = [nested_body(500), nested_body(5), flat_body()]
    assert all(len(b) <= BODY_LIMIT for b in bodies)
    stop = threading.Event()
    deadline = time.monotonic() + 20
    statuses: list[int] = []

    def attack(body: bytes) -> None:
        with requests.Session() as session:
            for _ in range(2000):  # bounded in count as in time
                if stop.is_set() or time.monotonic() > deadline:
                    return
                response = session.post(
                    predictor.http + INFER,
                    data=body,
                    headers={"content-type": "application/json"},
                    timeout=30,
                )
                statuses.append(response.status_code)

    attackers = [threading.Thread(target=attack, args=(b,)) for b in bodies]
    latencies = []
    try:
        for thread in attackers:
            thread.start()
        time.sleep(1)  # the attack is under way
        with requests.Session() as session:
            while time.monotonic() < deadline - 1 and len(latencies) < 1000:
                started = time.perf_counter()
                assert session.get(predictor.http + "/v2/health/ready", timeout=10).ok
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)
    finally:
        stop.set()
        for thread in attackers:
            thread.join(30)

    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    median = latencies[len(latencies) // 2]
    print(f"ready under attack: p99 {p99 * 1e3:.1f} ms, median {median * 1e3:.1f} ms")
    assert p99 < 0.1, (
        f"ready p99 {p99 * 1000:.0f} ms, median {latencies[len(latencies) // 2] * 1000:.0f} ms"
    )
    assert_still_serving(predictor)
