"""Where the API server is and how to authenticate: in-cluster (service account) or a kubeconfig."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._util import describe
from ..errors import Error

__all__ = ["SERVICE_ACCOUNT", "Config", "ConfigError", "TokenSource"]

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class ConfigError(Error, ValueError):
    """The cluster's configuration cannot be used: it names the file and what is wrong."""


class TokenSource:
    """A bearer token, fixed or read from a file; the file is read again when it changes (rotation).

    Kubernetes rotates projected service account tokens by replacing the file: its inode,
    size or modification time change, and the next request reads it again. ``refresh()``
    forces a read (after a ``401``).
    """

    def __init__(self, token: str | None = None, path: str | os.PathLike[str] | None = None) -> None:
        self._token = token
        self.path = None if path is None else os.fspath(path)
        self._stamp: tuple[int, int, int] | None = None
        self.reads = 0

    def get(self) -> str | None:
        if self.path is None:
            return self._token
        try:
            info = os.stat(self.path)
        except OSError as error:
            if self._token is not None:
                return self._token  # briefly missing while being replaced: keep the last one
            raise ConfigError(f"cannot read the token file {self.path!r}: {describe(error)}") from error
        stamp = (info.st_ino, info.st_size, info.st_mtime_ns)
        if stamp != self._stamp:
            self._read(stamp)
        return self._token

    def refresh(self) -> None:
        if self.path is not None:
            self._stamp = None

    def _read(self, stamp: tuple[int, int, int]) -> None:
        assert self.path is not None
        try:
            token = Path(self.path).read_text().strip()
        except OSError as error:
            if self._token is not None:
                return
            raise ConfigError(f"cannot read the token file {self.path!r}: {describe(error)}") from error
        self._token, self._stamp = token, stamp
        self.reads += 1


@dataclass
class Config:
    """An API server and its credentials.

    ``server``: ``https://host:port``; ``token`` (a ``TokenSource``) or a client certificate
    (``cert_file``, ``key_file``); ``ca_file`` / ``ca_data`` (PEM) to check the server, or
    ``verify=False``; ``namespace``: the default namespace (the context's, or the pod's).
    Build one with ``Config.in_cluster()``, ``Config.from_kubeconfig()`` or ``Config.load()``.
    """

    server: str
    token: TokenSource = field(default_factory=TokenSource)
    ca_file: str | None = None
    ca_data: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    verify: bool = True
    namespace: str = "default"
    source: str = "explicit"

    @classmethod
    def in_cluster(cls, *, root: str | os.PathLike[str] = SERVICE_ACCOUNT,
                   environ: Mapping[str, str] | None = None) -> Config:  # fmt: skip
        """The pod's own: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the service account's token, CA and namespace.

        ``root``: the directory holding ``token``, ``ca.crt`` and ``namespace`` (for tests).
        """
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise ConfigError(
                "not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set"
            )
        if ":" in host:
            host = f"[{host}]"
        directory = Path(root)
        token = directory / "token"
        if not token.is_file():
            raise ConfigError(f"in-cluster configuration: no service account token at {str(token)!r}")
        ca = directory / "ca.crt"
        namespace_file = directory / "namespace"
        namespace = namespace_file.read_text().strip() if namespace_file.is_file() else "default"
        return cls(
            server=f"https://{host}:{port}",
            token=TokenSource(path=token),
            ca_file=str(ca) if ca.is_file() else None,
            namespace=namespace or "default",
            source="in-cluster",
        )

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None, *, context: str | None = None) -> Config:
        """A kubeconfig's context (its current one by default): server, CA, token or client certificate.

        ``path``: the file (default: the first of ``$KUBECONFIG``, else ``~/.kube/config``).
        Relative file names in it are taken from its directory. Exec plugins and auth
        providers are not supported (a ``ConfigError`` says so).
        """
        file = Path(path) if path is not None else _default_kubeconfig()
        document = _load_yaml(file)
        base = file.parent

        wanted, ctx, cluster, user, server = _selected(document, file, context)

        def path_of(value: Any) -> str | None:
            return None if not value else str(base / str(value))

        def data_of(value: Any, key: str) -> bytes | None:
            if not value:
                return None
            try:
                return base64.b64decode(str(value), validate=True)
            except ValueError as error:
                raise ConfigError(f"kubeconfig {str(file)!r}: {key} is not base64") from error

        token_file = path_of(user.get("tokenFile"))
        token = TokenSource(token=user.get("token") or None, path=token_file)
        ca_data = data_of(cluster.get("certificate-authority-data"), "certificate-authority-data")
        return cls(
            server=server.rstrip("/"),
            token=token,
            ca_file=path_of(cluster.get("certificate-authority")),
            ca_data=None if ca_data is None else ca_data.decode(),
            cert_file=path_of(user.get("client-certificate")),
            key_file=path_of(user.get("client-key")),
            cert_data=data_of(user.get("client-certificate-data"), "client-certificate-data"),
            key_data=data_of(user.get("client-key-data"), "client-key-data"),
            verify=not cluster.get("insecure-skip-tls-verify", False),
            namespace=str(ctx.get("namespace") or "default"),
            source=f"kubeconfig {file} context {wanted}",
        )

    @classmethod
    def load(cls, *, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None) -> Config:
        """As client-go finds it: a kubeconfig named (or ``$KUBECONFIG``), else in-cluster in a pod, else ``~/.kube/config``."""  # noqa: E501
        named = kubeconfig is not None or context is not None or os.environ.get("KUBECONFIG")
        if not named and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return cls.in_cluster()
        return cls.from_kubeconfig(kubeconfig, context=context)

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What httpx's ``verify=`` gets for this server."""
        if not self.server.startswith("https:"):
            return True
        context = ssl.create_default_context()
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            if self.ca_file is not None:
                context.load_verify_locations(cafile=self.ca_file)
            if self.ca_data is not None:
                context.load_verify_locations(cadata=self.ca_data)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"cannot load the cluster's CA ({self.ca_file or 'inline data'}): {describe(error)}"
            ) from error
        if self.cert_file is not None or self.cert_data is not None:
            _load_client_cert(context, self)
        return context


def _load_client_cert(context: ssl.SSLContext, config: Config) -> None:
    with tempfile.TemporaryDirectory(prefix="loadbalancer-k8s-") as scratch:
        cert, key = config.cert_file, config.key_file
        if config.cert_data is not None:
            cert = os.path.join(scratch, "client.crt")
            Path(cert).write_bytes(config.cert_data)
        if config.key_data is not None:
            key = os.path.join(scratch, "client.key")
            with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                out.write(config.key_data)
        try:
            context.load_cert_chain(str(cert), key)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"cannot load the client certificate ({config.cert_file or 'inline data'}): "
                              f"{describe(error)}") from error  # fmt: skip


def _selected(
    document: dict[str, Any], file: Path, context: str | None
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """The context asked for (or the current one), its cluster, its user and the server, checked."""

    def named(section: str, name: str, what: str) -> dict[str, Any]:
        for entry in document.get(section) or ():
            if isinstance(entry, dict) and entry.get("name") == name:
                inner = entry.get(what)
                return inner if isinstance(inner, dict) else {}
        raise ConfigError(f"kubeconfig {str(file)!r}: no {what} named {name!r}")

    wanted = context or document.get("current-context")
    if not wanted:
        raise ConfigError(f"kubeconfig {str(file)!r}: no current-context, and no context= given")
    ctx = named("contexts", wanted, "context")
    cluster = named("clusters", str(ctx.get("cluster")), "cluster")
    user = named("users", str(ctx.get("user")), "user") if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise ConfigError(f"kubeconfig {str(file)!r}: cluster {ctx.get('cluster')!r} has no server")
    for unsupported in ("exec", "auth-provider"):
        if unsupported in user:
            raise ConfigError(
                f"kubeconfig {str(file)!r}: user {ctx.get('user')!r} authenticates with {unsupported!r},"
                " which is not supported: give a token, a token file or a client certificate"
            )
    return str(wanted), ctx, cluster, user, server


def _default_kubeconfig() -> Path:
    listed = os.environ.get("KUBECONFIG")
    if listed:
        for entry in listed.split(os.pathsep):
            if entry and Path(entry).is_file():
                return Path(entry)
    return Path.home() / ".kube" / "config"


def _load_yaml(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read the kubeconfig {str(file)!r}: {describe(error)}") from error
    try:
        import yaml
    except ImportError as error:  # pragma: no cover - the kubernetes extra brings it
        raise ConfigError("reading a kubeconfig needs PyYAML: pip install 'loadbalancer[kubernetes]'") from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"kubeconfig {str(file)!r} is not valid YAML: {error}") from error
    if not isinstance(document, dict):
        raise ConfigError(f"kubeconfig {str(file)!r} is not a mapping")
    return document
