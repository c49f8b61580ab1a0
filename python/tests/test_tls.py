"""The client over mutual TLS (docs/security.md): a `rask scheduler` and `rask worker` started with
certificates of a throwaway CA, reached with `Security(...)` and with Dask's variables; a client
of another CA, a `tls://` address without files and bad settings are refused with errors that say
what to set."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import START_TIMEOUT_S, Processes, free_port, rask_bin
from rask import compute, delayed
from rask.distributed import Client, Security

# This module is not importable on the workers: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ENV = (
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
    "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION",
)


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


@dataclass
class Member:
    ca_file: Path
    cert: Path
    key: Path

    def security(self) -> Security:
        return Security(tls_ca_file=str(self.ca_file), tls_client_cert=str(self.cert), tls_client_key=str(self.key))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_ca(dir: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    """A CA of its own (as rask::certs::ThrowawayCa): ECDSA P-256, its certificate in dir/ca.pem."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    dir.mkdir(parents=True, exist_ok=True)
    path = dir / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, path


def make_member(dir: Path, name: str, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]) -> Member:
    """A certificate the CA signs, for localhost, good for both ends (server and client auth)."""
    ca_cert, ca_key, ca_path = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    member = Member(ca_path, dir / f"{name}.pem", dir / f"{name}.key")
    member.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    member.key.write_bytes(_pem_key(key))
    member.key.chmod(0o600)
    return member


@dataclass
class TlsCluster:
    address: str
    tmp: Path
    client: Member
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]


@pytest.fixture(autouse=True)
def no_dask_tls_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without Dask's TLS variables; a test sets those it means."""
    for k in ENV:
        monkeypatch.delenv(k, raising=False)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """A scheduler and one worker over mutual TLS, the worker registered."""
    tmp = tmp_path_factory.mktemp("rask-tls")
    ca = make_ca(tmp / "certs", "python tls test CA")
    members = {name: make_member(tmp / "certs", name, ca) for name in ("scheduler", "worker", "client")}
    rask = rask_bin()
    port, http_port = free_port(), free_port()
    address = f"tls://127.0.0.1:{port}"

    def flags(m: Member) -> list[str]:
        return ["--tls-ca-file", str(m.ca_file), "--tls-cert", str(m.cert), "--tls-key", str(m.key)]

    procs = Processes(tmp)
    procs.start("tls scheduler", [rask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", f"127.0.0.1:{http_port}", *flags(members["scheduler"])])
    workdir = tmp / "w0"
    workdir.mkdir()
    procs.start("tls worker", [rask, "worker", address, "--name", "w0", "--nthreads", "1", "--listen-host", "127.0.0.1", "--local-directory", str(workdir), *flags(members["worker"])])
    # The HTTP API is HTTPS and wants a certificate of the cluster: the client's.
    ctx = ssl.create_default_context(cafile=str(ca[2]))
    ctx.load_cert_chain(str(members["client"].cert), str(members["client"].key))
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{http_port}/api/v1/get_workers", timeout=5, context=ctx) as r:
                if len(json.load(r)["workers"]) == 1:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for _, p, _ in procs.popens):
            procs.stop()
            pytest.fail(f"the TLS cluster did not start:\n{procs.describe()}", pytrace=False)
        time.sleep(0.1)
    yield TlsCluster(address, tmp, members["client"], ca)
    procs.stop()


def run_work(client: Client) -> None:
    """A Python function, a future as an argument, and a delayed graph, over the client."""
    x = client.submit(inc, 10)
    assert client.submit(add, x, 5).result(timeout=60) == 16
    total = delayed(sum)([delayed(add)(delayed(inc)(i), i) for i in range(4)])
    assert client.compute(total).result(timeout=60) == 16
    assert compute(total) == (16,)


def test_security_reaches_a_tls_cluster(tls_cluster: TlsCluster):
    with Client(tls_cluster.address, security=tls_cluster.client.security()) as client:
        assert client.address == tls_cluster.address
        run_work(client)


def test_dasks_variables_reach_a_tls_cluster(tls_cluster: TlsCluster, monkeypatch: pytest.MonkeyPatch):
    m = tls_cluster.client
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", str(m.ca_file))
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", str(m.cert))
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", str(m.key))
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "True")
    with Client(tls_cluster.address) as client:
        run_work(client)


def test_security_fields_win_over_the_variables(tls_cluster: TlsCluster, monkeypatch: pytest.MonkeyPatch):
    # The variables name files that do not exist: the Security's must be the ones read.
    missing = tls_cluster.tmp / "missing.pem"
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", str(missing))
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", str(missing))
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", str(missing))
    with Client(tls_cluster.address, security=tls_cluster.client.security()) as client:
        assert client.submit(inc, 1).result(timeout=60) == 2
    # And a field left out is read from its variable: here the (missing) key.
    m = tls_cluster.client
    with pytest.raises(OSError, match=f"key file {missing}"):
        Client(tls_cluster.address, security=Security(tls_ca_file=str(m.ca_file), tls_client_cert=str(m.cert)))


def test_a_certificate_holding_its_key_needs_no_key_file(tls_cluster: TlsCluster):
    m = tls_cluster.client
    both = tls_cluster.tmp / "client-and-key.pem"
    both.write_bytes(m.cert.read_bytes() + m.key.read_bytes())
    with Client(tls_cluster.address, security=Security(tls_ca_file=m.ca_file, tls_client_cert=both)) as client:
        assert client.submit(inc, 41).result(timeout=60) == 42


def test_another_cas_certificate_is_refused(tls_cluster: TlsCluster, tmp_path: Path):
    other = make_member(tmp_path, "intruder", make_ca(tmp_path, "intruder CA"))
    with pytest.raises(ConnectionError) as e:
        Client(tls_cluster.address, security=other.security(), timeout=20)
    assert tls_cluster.address in str(e.value)
    # Trusting the cluster's CA but presenting the intruder's certificate: refused too.
    own_ca = Security(tls_ca_file=tls_cluster.client.ca_file, tls_client_cert=other.cert, tls_client_key=other.key)
    with pytest.raises(ConnectionError) as e:
        with Client(tls_cluster.address, security=own_ca, timeout=20) as c:
            c.submit(inc, 1).result(timeout=20)
    assert tls_cluster.address in str(e.value)


def test_a_tls_address_without_files_says_what_to_set(tls_cluster: TlsCluster):
    with pytest.raises(ValueError) as e:
        Client(tls_cluster.address)
    msg = str(e.value)
    assert tls_cluster.address in msg and "tls://" in msg
    for name in ("Security(", "tls_ca_file", "tls_client_cert", *ENV[:3]):
        assert name in msg, (name, msg)


def test_a_plain_client_cannot_talk_to_a_tls_scheduler(tls_cluster: TlsCluster):
    plain = tls_cluster.address.replace("tls://", "tcp://")
    with pytest.raises(ConnectionError, match=plain):
        Client(plain, timeout=10)


def test_security_refuses_what_rask_does_not_support():
    with pytest.raises(TypeError, match=r"\['tls_cert', 'tls_min_version'\]"):
        Security(tls_cert="a.pem", tls_min_version=None)
    with pytest.raises(TypeError, match="tls_ca_file must be the path"):
        Security(tls_ca_file=b"ca.pem")
    with pytest.raises(TypeError, match="require_encryption"):
        Security(require_encryption="yes")
    with pytest.raises(ValueError, match="tls_client_cert must not be empty"):
        Security(tls_client_cert="")
    with pytest.raises(TypeError, match="security must be a rask.distributed.Security"):
        Client("tcp://127.0.0.1:1", security={"tls_ca_file": "ca.pem"})
    assert repr(Security(tls_ca_file="ca.pem", require_encryption=True)) == "Security(require_encryption=True, tls_ca_file='ca.pem')"


def test_incomplete_or_unreadable_files_are_named(tmp_path: Path):
    m = make_member(tmp_path, "client", make_ca(tmp_path, "a CA"))
    address = "tls://127.0.0.1:1"
    with pytest.raises(ValueError, match="tls_ca_file .*DASK_DISTRIBUTED__COMM__TLS__CA_FILE.* and tls_client_cert"):
        Client(address, security=Security(tls_client_cert=m.cert, tls_client_key=m.key))
    with pytest.raises(ValueError, match="tls_client_cert"):
        Client(address, security=Security(tls_ca_file=m.ca_file))
    missing = tmp_path / "nope.pem"
    with pytest.raises(OSError, match=f"CA file {missing}"):
        Client(address, security=Security(tls_ca_file=missing, tls_client_cert=m.cert, tls_client_key=m.key))
    with pytest.raises(ValueError, match=f"key file {m.cert} holds no private key"):
        Client(address, security=Security(tls_ca_file=m.ca_file, tls_client_cert=m.cert))


def test_required_encryption_refuses_a_tcp_address(monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="tcp://127.0.0.1:1 is not a tls:// address, and encryption is required"):
        Client("tcp://127.0.0.1:1", security=Security(require_encryption=True))
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "1")
    with pytest.raises(ValueError, match="encryption is required"):
        Client("127.0.0.1:1")
    # An explicit False wins over the variable: the connection is tried (nobody listens).
    with pytest.raises(ConnectionError, match="tcp://127.0.0.1:1"):
        Client("tcp://127.0.0.1:1", security=Security(require_encryption=False), timeout=1)
