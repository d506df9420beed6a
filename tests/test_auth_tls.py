"""Token auth and TLS against real etcd 3.4 and 3.5 servers (no mocks, own servers per module)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from txetcd import AuthFailed, Client, KeySet, PermissionDenied, Unavailable, prefix_end
from txetcd.embedded import EtcdProcess
from txetcd.types import b64

from .certs import TestPKI, make_pki
from .conftest import Loop

inline = pytest_twisted.ensureDeferred


@pytest.fixture
def client(kv: Client) -> Client:
    """This module's tests run on both loops: ``client`` is the loop's (see conftest ``kv``)."""
    return kv

ROOT, ROOT_PASSWORD = "root", "root-secret"
APP_USER, APP_PASSWORD, APP_PREFIX = "alice", "alice-secret", b"app/"
TOKEN_TTL = 1  # seconds; etcd's --auth-token-ttl for simple tokens


async def enable_auth(admin: Client) -> None:
    """Create root, a user limited to ``APP_PREFIX``, then turn auth on (etcd's required order)."""
    steps: list[tuple[str, dict[str, Any]]] = [
        ("auth/user/add", {"name": ROOT, "password": ROOT_PASSWORD}),
        ("auth/user/grant", {"user": ROOT, "role": "root"}),
        ("auth/role/add", {"name": "app"}),
        ("auth/role/grant", {"name": "app", "perm": {
            "permType": "READWRITE", "key": b64(APP_PREFIX),
            "range_end": b64(prefix_end(APP_PREFIX))}}),
        ("auth/user/add", {"name": APP_USER, "password": APP_PASSWORD}),
        ("auth/user/grant", {"user": APP_USER, "role": "app"}),
        ("auth/enable", {}),
    ]
    for path, body in steps:
        await admin.transport.call(path, body, idempotent=False)


@pytest.fixture(scope="module")
def auth_etcd(etcd_binary: Path) -> Iterator[EtcdProcess]:
    """A server with auth on and 1 s simple tokens, so that tokens expire within a test."""
    with EtcdProcess(etcd_binary, extra_args=[f"--auth-token-ttl={TOKEN_TTL}"]) as server:
        admin = Client(reactor, url=server.url)
        try:
            pytest_twisted.blockon(defer.ensureDeferred(enable_auth(admin)))
        finally:
            pytest_twisted.blockon(admin.close())
        yield server


# -- auth ----------------------------------------------------------------------------------------


async def test_auth_off_needs_no_credentials_and_tolerates_them(loop: Loop, client: Client,
                                                                  etcd: EtcdProcess) -> None:
    assert (await client.set(b"open", b"1")).revision > 0
    # Like etcd's Go client: credentials for a server without auth are not an error.
    with_credentials = loop.client(url=etcd.url, user="someone", password="anything")
    try:
        assert (await with_credentials.get(b"open")).kvs[0].value == b"1"
        assert with_credentials.transport.authentications == 0
    finally:
        await with_credentials.close()


async def test_users_passwords_and_permissions(loop: Loop, auth_etcd: EtcdProcess) -> None:
    root = loop.client(url=auth_etcd.url, user=ROOT, password=ROOT_PASSWORD)
    app = loop.client(url=auth_etcd.url, user=APP_USER, password=APP_PASSWORD)
    anonymous = loop.client(url=auth_etcd.url)
    wrong = loop.client(url=auth_etcd.url, user=ROOT, password="not-the-password")
    stranger = loop.client(url=auth_etcd.url, user="mallory", password="x")
    try:
        await root.set(b"top", b"secret")
        assert (await root.get(b"top")).kvs[0].value == b"secret"
        await app.set(APP_PREFIX + b"k", b"mine")
        assert (await app.get(APP_PREFIX + b"k")).kvs[0].value == b"mine"
        with pytest.raises(PermissionDenied):
            await app.set(b"top", b"overwritten")
        with pytest.raises(PermissionDenied):
            await app.get(b"top")
        assert (await root.get(b"top")).kvs[0].value == b"secret"
        for rejected in (wrong, stranger):
            with pytest.raises(AuthFailed, match="authentication failed"):
                await rejected.get(b"top")
        with pytest.raises(AuthFailed, match="user name is empty"):
            await anonymous.get(b"top")
    finally:
        for c in (root, app, anonymous, wrong, stranger):
            await c.close()


async def test_expired_token_is_renewed_transparently(loop: Loop, auth_etcd: EtcdProcess) -> None:
    app = loop.client(url=auth_etcd.url, user=APP_USER, password=APP_PASSWORD)
    try:
        await app.set(APP_PREFIX + b"ttl", b"1")
        assert app.transport.authentications == 1
        await loop.sleep(TOKEN_TTL + 1.5)  # etcd drops idle tokens on a 1 s tick after their TTL
        await app.set(APP_PREFIX + b"ttl", b"2")
        assert app.transport.authentications == 2
        # Many requests rejected with the same stale token share one new authentication.
        await loop.sleep(TOKEN_TTL + 1.5)
        reads = await loop.gather(*[app.get(APP_PREFIX + b"ttl") for _ in range(8)])
        assert {r.kvs[0].value for r in reads} == {b"2"}
        assert app.transport.authentications == 3
    finally:
        await app.close()


async def test_a_connected_client_survives_auth_being_enabled(
        loop: Loop, fresh_etcd: EtcdProcess) -> None:
    # etcd answers "user name is empty" once auth is on and no token came: authenticate, resend.
    admin = loop.client(url=fresh_etcd.url, user=ROOT, password=ROOT_PASSWORD)
    try:
        await admin.set(b"before", b"1")
        assert admin.transport.authentications == 0  # auth is off: nothing to authenticate
        await enable_auth(admin)
        await admin.set(b"after", b"2")
        assert admin.transport.authentications == 1
        assert [kv.key for kv in (await admin.get(KeySet.all())).kvs] == [b"after", b"before"]
    finally:
        await admin.close()


# -- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_server(binary: Path, pki: TestPKI, *extra: str) -> EtcdProcess:
    args = ["--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key), *extra]
    return EtcdProcess(binary, extra_args=args, scheme="https")


@pytest.fixture(scope="module")
def tls_etcd(etcd_binary: Path, pki: TestPKI) -> Iterator[EtcdProcess]:
    """A server on https; any client may connect (no client certificates)."""
    with _tls_server(etcd_binary, pki) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_etcd(etcd_binary: Path, pki: TestPKI) -> Iterator[EtcdProcess]:
    """A server on https that only lets clients with a certificate from the test CA in."""
    with _tls_server(etcd_binary, pki, "--client-cert-auth",
                     "--trusted-ca-file", str(pki.ca)) as server:
        yield server


async def assert_tls_refused(client: Client) -> None:
    """The request fails quickly with a TLS message, and a write is known not to be applied."""
    try:
        with pytest.raises(Unavailable, match="TLS handshake failed") as refused:
            await client.set(b"tls/refused", b"x")
        assert refused.value.outcome_unknown is False
    finally:
        await client.close()


async def test_tls_with_the_servers_ca(loop: Loop, tls_etcd: EtcdProcess, pki: TestPKI) -> None:
    assert tls_etcd.url.startswith("https://127.0.0.1:")
    by_name = tls_etcd.url.replace("127.0.0.1", "localhost")  # the cert names both
    for url in (tls_etcd.url, by_name):
        client = loop.client(url=url, ca=str(pki.ca))
        try:
            rev = await client.set(b"tls/k", url.encode())
            assert (await client.get(b"tls/k")).kvs[0].mod_revision == rev.revision
            assert (await client.status()).version == tls_etcd.version
        finally:
            await client.close()


async def test_tls_without_the_servers_ca_fails_clearly(loop: Loop, tls_etcd: EtcdProcess,
                                                        pki: TestPKI) -> None:
    await assert_tls_refused(loop.client(url=tls_etcd.url, timeout=10))
    await assert_tls_refused(loop.client(url=tls_etcd.url, ca=str(pki.other_ca), timeout=10))


async def test_client_certificates(loop: Loop, mtls_etcd: EtcdProcess, pki: TestPKI) -> None:
    with_cert = loop.client(url=mtls_etcd.url, ca=str(pki.ca), cert=str(pki.client_cert),
                            key=str(pki.client_key))
    try:
        await with_cert.set(b"mtls/k", b"v")
        assert (await with_cert.get(b"mtls/k")).kvs[0].value == b"v"
    finally:
        await with_cert.close()
    await assert_tls_refused(loop.client(url=mtls_etcd.url, ca=str(pki.ca), timeout=10))


def test_tls_options_are_checked_before_connecting(loop: Loop, pki: TestPKI) -> None:
    with pytest.raises(ValueError, match="key= needs cert="):
        loop.client(url="https://127.0.0.1:9", key=str(pki.client_key))
    with pytest.raises(FileNotFoundError):
        loop.client(url="https://127.0.0.1:9", ca=str(pki.ca) + ".missing")
