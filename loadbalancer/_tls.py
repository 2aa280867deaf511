"""TLS settings for the clients of registries (etcd, Consul, ...): CA checking and a client certificate."""

from __future__ import annotations

import ssl

from ._util import describe

__all__ = ["ssl_context"]


def ssl_context(verify: bool | str | ssl.SSLContext, cert: str | tuple[str, str] | None) -> ssl.SSLContext:
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
