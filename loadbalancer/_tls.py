"""TLS settings for the clients of registries (etcd, Consul, Eureka, ...): ``TLSConfig``."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from ._deprecated import warn
from ._util import describe

__all__ = ["TLS", "TLSConfig", "legacy_tls", "ssl_context", "verify_context"]


@dataclass(frozen=True)
class TLSConfig:
    """How to speak TLS to a registry: which CAs to trust, and a client certificate.

    - ``ca``: a PEM file of the CAs to trust (default: the system's);
    - ``cert``, ``key``: a client certificate and its key, both PEM files (``key`` may be
      left out when ``cert`` holds both);
    - ``verify``: check the server's certificate and name (default ``True``; ``False`` is
      for tests only: anyone on the path can then read and change the traffic).

    Every backend's ``tls=`` takes one (or an ``ssl.SSLContext`` made by hand):

    >>> TLSConfig(ca="ca.pem", cert="client.pem", key="client-key.pem").verify
    True
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True

    def __post_init__(self) -> None:
        for name in ("ca", "cert", "key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"TLSConfig {name}= must be a file path, got {value!r}")
        if self.key is not None and self.cert is None:
            raise ValueError("TLSConfig key= needs the certificate it belongs to: give cert= too")
        if not isinstance(self.verify, bool):
            raise TypeError(f"TLSConfig verify= must be True or False, got {self.verify!r}")

    def context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` with these settings; a file that cannot be read is a ``ValueError`` naming it."""
        try:
            context = ssl.create_default_context(cafile=self.ca)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"cannot load the CA file {self.ca!r}: {describe(error)}") from error
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert is not None:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as error:
                what = self.cert if self.key is None else f"{self.cert} with key {self.key}"
                raise ValueError(f"cannot load the client certificate {what}: {describe(error)}") from error
        return context


TLS = TLSConfig | ssl.SSLContext | bool | None  # what every tls= takes: True is TLSConfig()


def ssl_context(tls: TLS) -> ssl.SSLContext | None:
    """The context ``tls=`` asks for (``None``: plain, or the scheme's default where a URL says https)."""
    if tls is None or tls is False:
        return None
    if tls is True:
        return TLSConfig().context()
    if isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, TLSConfig):
        return tls.context()
    raise TypeError(f"tls= must be a loadbalancer.TLSConfig, an ssl.SSLContext or a bool, got {tls!r}")


def legacy_tls(options: dict[str, Any], old: str, value: Any) -> None:
    """Fold the old ``verify=`` and ``cert=`` keywords into ``tls=`` (a ``_deprecated.renamed`` converter)."""
    warn(f"{old}= is deprecated: write tls=loadbalancer.TLSConfig(...) (or an ssl.SSLContext)", stacklevel=4)
    if old == "verify":
        verify, cert = value, options.pop("cert", None)
    else:
        verify, cert = options.pop("verify", True), value
    if options.get("tls") is not None:
        raise TypeError("give TLS settings as tls= alone, not with verify= or cert=")
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ValueError("give the client certificate in the SSLContext passed as verify=, not as cert=")
        options["tls"] = verify
        return
    if not isinstance(verify, bool | str):
        raise TypeError(f"verify must be a bool, a CA file path or an ssl.SSLContext, got {verify!r}")
    certfile, keyfile = (cert, None) if cert is None or isinstance(cert, str) else cert
    options["tls"] = TLSConfig(
        ca=verify if isinstance(verify, str) else None,
        cert=certfile,
        key=keyfile,
        verify=verify if isinstance(verify, bool) else True,
    )


def verify_context(verify: bool | str | ssl.SSLContext, cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    """TLS settings: CA checking (``verify``: a bool, a CA file or an ``SSLContext``) and a client certificate."""
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise ValueError("give the client certificate in the SSLContext passed as verify=, not as cert=")
        return verify
    if isinstance(verify, bool):
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        try:
            context = ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"cannot load the CA file {verify!r}: {describe(error)}") from error
    else:
        raise TypeError(f"verify must be a bool, a CA file path or an ssl.SSLContext, got {verify!r}")
    if cert is not None:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"cannot load the client certificate {cert!r}: {describe(error)}") from error
    return context
