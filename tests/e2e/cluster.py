"""A real Kubernetes control plane on 127.0.0.1 for the e2e tier.

etcd, kube-apiserver (RBAC + Node authorization, the default admission plugins), kube-controller-manager
(Deployments, ReplicaSets, Jobs, CronJobs, service accounts and their tokens, garbage collection ...),
kube-scheduler and kwok, from the binaries `.ci/controlplane` builds. There is no container runtime: kwok
plays the kubelet of one fake Node and moves scheduled Pods through their phases by Stage rules. The
service and pod CIDRs are only values written into objects; nothing routes to them, so tests talk to the
API server alone and never to a Service or Pod address.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import datetime as dt
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self, TypeVar

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

NODE_NAME: Final = "kwok-node-0"
SERVICE_CIDR: Final = "10.96.0.0/16"  # values only: nothing routes to these addresses
POD_CIDR: Final = "10.244.0.0/16"
_LOG_TAIL: Final = 40


class ControlPlaneError(RuntimeError):
    """The control plane did not start, a component died, or a wait timed out (message names the logs)."""


@dataclass
class _Component:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


try:
    _PRCTL: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl  # resolved before any fork
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:
    """Linux: the component is killed when the test process dies without stop(), e.g. by SIGKILL; a
    SIGTERM would leave the API server waiting on an etcd that is gone."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = _LOG_TAIL) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


@dataclass(frozen=True)
class _Pki:
    """PEM files of a throwaway PKI: one CA, the API server's serving cert, an admin client cert
    (group system:masters) and the service-account signing key pair."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path
    sa_pub: Path

    @classmethod
    def create(cls, folder: Path) -> _Pki:
        folder.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.UTC)

        def pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
            return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())

        def cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 signer: ec.EllipticCurvePrivateKey, *, ca: bool = False,
                 usage: x509.ObjectIdentifier | None = None,
                 sans: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
            b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
                 .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
            if ca:
                b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
            if usage is not None:
                b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
            return b.sign(signer, hashes.SHA256())

        def name(cn: str, org: str | None = None) -> x509.Name:
            attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
            if org:
                attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
            return x509.Name(attrs)

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = name("kingmaker-e2e-ca")
        ca = cert(ca_name, ca_key, ca_name, ca_key, ca=True)
        serving_key = ec.generate_private_key(ec.SECP256R1())
        dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local"]
        serving = cert(name("kube-apiserver"), serving_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                       sans=[x509.IPAddress(IPv4Address("127.0.0.1")), *(x509.DNSName(d) for d in dns)])
        admin_key = ec.generate_private_key(ec.SECP256R1())
        admin = cert(name("kubernetes-admin", "system:masters"), admin_key, ca_name, ca_key,
                     usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        pki = cls(*(folder / f for f in ("ca.crt", "serving.crt", "serving.key", "admin.crt", "admin.key",
                                          "sa.key", "sa.pub")))
        pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
        pki.serving_key.write_bytes(pem_key(serving_key))
        pki.admin_cert.write_bytes(admin.public_bytes(serialization.Encoding.PEM))
        pki.admin_key.write_bytes(pem_key(admin_key))
        pki.sa_key.write_bytes(pem_key(sa_key))
        pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))
        for key in (pki.serving_key, pki.admin_key, pki.sa_key):
            key.chmod(0o600)
        return pki


class ControlPlane:
    """Start with ``start()`` (or ``with ControlPlane(...) as cp``); ``stop()`` kills every component's
    process group and removes certificates and etcd data. Component logs stay in ``log_dir``."""

    def __init__(self, bin_dir: Path, stages: Sequence[Path], log_dir: Path, tools_bin: Path) -> None:
        missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
                   if not os.access(bin_dir / b, os.X_OK)]
        if missing:
            raise ControlPlaneError(f"{bin_dir}: missing {', '.join(missing)}; run `bash .ci/controlplane`")
        if not stages:
            raise ControlPlaneError("no kwok Stage files: pods would never turn Running")
        self.bin_dir = bin_dir
        self.stages = [s.resolve() for s in stages]  # components run in the temporary folder
        self.log_dir = log_dir
        self.tools_bin = tools_bin
        self._workdir = Path(tempfile.mkdtemp(prefix="kingmaker-controlplane-"))
        self._components: list[_Component] = []
        self._pki: _Pki | None = None
        self.server = ""
        self.startup_seconds = 0.0

    # --- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def kubeconfig_path(self) -> Path:
        """An admin (system:masters) kubeconfig for kubectl, helm and the python client."""
        return self._workdir / "admin.kubeconfig"

    def start(self, timeout: float = 90.0) -> None:
        """etcd, the API server, then controller-manager, scheduler and kwok; returns once the fake Node
        is Ready, the default ServiceAccount exists and every component answers its health check."""
        t0 = time.monotonic()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._pki = _Pki.create(self._workdir / "pki")
        etcd_url = self._start_etcd(timeout)
        self._start_apiserver(etcd_url, timeout)
        self._start_controllers(timeout)
        self.startup_seconds = time.monotonic() - t0

    def _start_etcd(self, timeout: float) -> str:
        url, peer = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
        self._spawn("etcd", [
            "--name=e2e", f"--data-dir={self._workdir / 'etcd'}", f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}", f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=e2e={peer}", "--unsafe-no-fsync", "--log-level=warn"])
        self.wait_for("etcd /health", lambda: b'"health":"true"' in self._get(f"{url}/health"), timeout=timeout)
        return url

    def _start_apiserver(self, etcd_url: str, timeout: float) -> None:
        assert self._pki is not None
        pki, port = self._pki, _free_port()
        self.server = f"https://127.0.0.1:{port}"
        self._write_kubeconfig(pki)
        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            # Aggregation's front-proxy settings, as kubeadm writes them (no cert carries the allowed name):
            # without them the controller-manager and scheduler log an error about the CA bundle every second.
            f"--requestheader-client-ca-file={pki.ca_cert}", "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--service-account-key-file={pki.sa_pub}", f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # on top of the default set
            "--endpoint-reconciler-type=none",  # a loopback address is not a valid Endpoints address
            "--allow-privileged=true", "--profiling=false", f"--cert-dir={self._workdir / 'apiserver'}"])
        self.wait_for("kube-apiserver /readyz", lambda: self._get(f"{self.server}/readyz") == b"ok", timeout=timeout)

    def _start_controllers(self, timeout: float) -> None:
        assert self._pki is not None
        kubeconfig, kcm_port, sched_port = str(self.kubeconfig_path), _free_port(), _free_port()
        delegated = [f"--kubeconfig={kubeconfig}", f"--authentication-kubeconfig={kubeconfig}",
                     f"--authorization-kubeconfig={kubeconfig}", "--bind-address=127.0.0.1", "--leader-elect=false"]
        self._spawn("kube-controller-manager", [
            *delegated, f"--secure-port={kcm_port}", f"--cert-dir={self._workdir / 'kcm'}",
            f"--service-account-private-key-file={self._pki.sa_key}", f"--root-ca-file={self._pki.ca_cert}",
            "--controllers=*", "--use-service-account-credentials=false"])
        self._spawn("kube-scheduler", [*delegated, f"--secure-port={sched_port}",
                                       f"--cert-dir={self._workdir / 'scheduler'}"])
        self._spawn("kwok", [
            f"--kubeconfig={kubeconfig}", "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}", "--node-ip=10.0.0.1", *(f"--config={s}" for s in self.stages),
            # Heartbeats through the Node's Lease, as kubelets do; without them the node lifecycle
            # controller marks the Node NotReady after ~50 s and evicts its Pods.
            "--node-lease-duration-seconds=40"],
            env={"HOME": str(self._workdir)})  # kwok reads ~/.kwok: keep the user's out of it
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_node(self._fake_node())
            self.wait_for(f"Node {NODE_NAME} Ready (kwok)",
                          lambda: condition_true(core.read_node_status(NODE_NAME).status, "Ready"), timeout=timeout)
            self.wait_for(f"Lease kube-node-lease/{NODE_NAME} (kwok heartbeat)",
                          lambda: client.CoordinationV1Api(api).read_namespaced_lease(NODE_NAME, "kube-node-lease"),
                          timeout=timeout)
            self.wait_for("ServiceAccount default/default (controller-manager)",
                          lambda: core.read_namespaced_service_account("default", "default"), timeout=timeout)
        self.wait_for("kube-controller-manager /healthz", lambda: self._healthy(kcm_port), timeout=timeout)
        self.wait_for("kube-scheduler /healthz", lambda: self._healthy(sched_port), timeout=timeout)

    def stop(self) -> None:
        """Stop components newest first (SIGTERM to the process group, SIGKILL after 10 s), then remove
        certificates, kubeconfig and etcd data. Safe to call twice."""
        for comp in reversed(self._components):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(comp.process.pid, signal.SIGTERM)
            try:
                comp.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(comp.process.pid, signal.SIGKILL)
                comp.process.wait(timeout=10)
            comp.log_file.close()
        self._components.clear()
        shutil.rmtree(self._workdir, ignore_errors=True)

    # --- helpers for tests --------------------------------------------------------------------------

    def api_client(self, token: str | None = None) -> client.ApiClient:
        """An ApiClient as the admin (kubeconfig client certificate) or, given ``token``, as whoever that
        bearer token names. Use it as a context manager so its connection pool is closed."""
        if token is None:
            return config.new_client_from_config(config_file=str(self.kubeconfig_path))
        assert self._pki is not None, "start() first"
        conf = client.Configuration(host=self.server, api_key={"authorization": token},
                                    api_key_prefix={"authorization": "Bearer"})
        conf.ssl_ca_cert = str(self._pki.ca_cert)
        return client.ApiClient(conf)

    def create_namespace(self, prefix: str = "e2e") -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        with self.api_client() as api:
            client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        return name

    def delete_namespace(self, name: str) -> None:
        """Ask for deletion; the namespace controller finishes it in the background."""
        with self.api_client() as api, contextlib.suppress(ApiException):
            client.CoreV1Api(api).delete_namespace(name)

    def service_account_token(self, namespace: str, name: str, expiration_seconds: int = 3600) -> str:
        """A bound token for an existing ServiceAccount, from the TokenRequest API (what kubelets
        project into pods); its audience is the API server's."""
        request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
            audiences=[], expiration_seconds=expiration_seconds))
        with self.api_client() as api:
            answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
        if answer.status is None or not answer.status.token:
            raise ControlPlaneError(f"TokenRequest for {namespace}/{name} returned no token")
        return answer.status.token

    def write_kubeconfig(self, path: Path, token: str, namespace: str) -> Path:
        """A kubeconfig whose user is ``token`` (e.g. a ServiceAccount's, from `service_account_token`) and
        whose current namespace is ``namespace``: what a process outside the cluster needs to act as that
        account, the way the in-cluster configuration does inside a pod."""
        assert self._pki is not None, "start() first"
        ca = base64.b64encode(self._pki.ca_cert.read_bytes()).decode()
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e", "preferences": {},
            "clusters": [{"name": "e2e", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "token", "namespace": namespace}}]}))
        path.chmod(0o600)
        return path

    def env(self) -> dict[str, str]:
        """The environment of a process run as the admin: ``KUBECONFIG``, ``kubectl`` and ``helm`` from
        ``tools_bin`` first on ``PATH``, helm's cache and config in the temporary folder."""
        helm_homes = {f"HELM_{k}_HOME": str(self._workdir / f"helm-{k.lower()}") for k in ("CACHE", "CONFIG", "DATA")}
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig_path), **helm_homes,
                "PATH": f"{self.tools_bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl`` or ``helm`` from ``tools_bin`` as the admin (`env`). With ``check``, a non-zero exit
        raises AssertionError with the output."""
        exe = self.tools_bin / tool
        if not os.access(exe, os.X_OK):
            raise AssertionError(f"{tool} is not in {self.tools_bin}: run `bash .ci/tools`")
        proc = subprocess.run([str(exe), *args], check=False, capture_output=True, text=True, timeout=timeout,
                              env=self.env())
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def wait_for(self, what: str, check: Callable[[], T], *, timeout: float = 60.0, interval: float = 0.2) -> T:
        """Poll ``check`` until it returns something truthy and return that. API errors and refused
        connections count as "not yet"; a dead component or the timeout raises ControlPlaneError naming
        ``what``, the last value or error, and the component logs."""
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            self._check_alive()
            try:
                value = check()
                if value:
                    return value
                last = value
            except (ApiException, OSError) as exc:
                last = exc
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what} "
                                        f"(last: {_short(last)})\n{self.describe_logs()}")
            time.sleep(interval)

    def logs(self) -> dict[str, Path]:
        return {c.name: c.log for c in self._components}

    def describe_logs(self, tail_of: str | None = None) -> str:
        lines = ["control plane logs:", *(f"  {n}: {p}" for n, p in self.logs().items())]
        if tail_of is not None and tail_of in self.logs():
            lines += [f"--- last lines of {tail_of} ---", _tail(self.logs()[tail_of])]
        return "\n".join(lines)

    # --- internals ----------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log_dir / f"{name}.log"
        log_file = log.open("ab")
        proc = subprocess.Popen([str(self.bin_dir / name), *args], stdin=subprocess.DEVNULL, stdout=log_file,
                                stderr=subprocess.STDOUT, cwd=self._workdir, start_new_session=True,
                                preexec_fn=_die_with_parent,
                                env={**os.environ, **(env or {})})
        self._components.append(_Component(name, proc, log, log_file))

    def _check_alive(self) -> None:
        for comp in self._components:
            code = comp.process.poll()
            if code is not None:
                raise ControlPlaneError(f"{comp.name} exited with code {code}\n{self.describe_logs(comp.name)}")

    def _get(self, url: str, *, verify: bool = True) -> bytes:
        """GET with the admin client certificate (API server) or plain HTTP (etcd)."""
        ctx = None
        if url.startswith("https://"):
            assert self._pki is not None
            ctx = ssl.create_default_context(cafile=str(self._pki.ca_cert))
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(self._pki.admin_cert, self._pki.admin_key)
        try:
            with urllib.request.urlopen(url, timeout=5, context=ctx) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as exc:  # e.g. /readyz 500 while post-start hooks run
            return bytes(exc.read())

    def _healthy(self, port: int) -> bool:
        """The controller-manager's and scheduler's /healthz (self-signed serving certs of their own)."""
        return self._get(f"https://127.0.0.1:{port}/healthz", verify=False) == b"ok"

    def _write_kubeconfig(self, pki: _Pki) -> None:
        def b64(path: Path) -> str:
            return base64.b64encode(path.read_bytes()).decode()

        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e", "preferences": {},
            "clusters": [{"name": "e2e", "cluster": {"server": self.server,
                                                      "certificate-authority-data": b64(pki.ca_cert)}}],
            "users": [{"name": "admin", "user": {"client-certificate-data": b64(pki.admin_cert),
                                                 "client-key-data": b64(pki.admin_key)}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin", "namespace": "default"}}],
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(kubeconfig))
        self.kubeconfig_path.chmod(0o600)

    @staticmethod
    def _fake_node() -> client.V1Node:
        # Room for every test's pods at once (the chart requests 500m per Scorer/Router pod and namespaces are
        # deleted in the background): kwok runs no container, so capacity is only a number the scheduler reads.
        capacity = {"cpu": "1000", "memory": "4Ti", "pods": "1000"}
        return client.V1Node(
            metadata=client.V1ObjectMeta(
                name=NODE_NAME,
                annotations={"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                labels={"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64", "type": "kwok"}),
            status=client.V1NodeStatus(capacity=capacity, allocatable=capacity))


def condition_true(status: object, kind: str) -> bool:
    """Whether an object's ``status.conditions`` (Node, Pod, Deployment, Job, CRD ...) has ``kind`` True."""
    return any(c.type == kind and c.status == "True" for c in getattr(status, "conditions", None) or [])


def _short(value: object, limit: int = 300) -> str:
    text = repr(value) if not isinstance(value, ApiException) else f"HTTP {value.status} {value.reason}"
    return text if len(text) <= limit else text[:limit] + "..."

