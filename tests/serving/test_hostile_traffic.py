"""What an outsider or a broken neighbour can send the predictor, against a real
`python -m serving` process and a real `mlflow server`: nothing may take the model down,
stall it, or grow its memory. Each load phase is bounded in count and time."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
import requests
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
