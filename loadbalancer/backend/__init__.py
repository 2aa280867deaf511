"""The backend protocol for registries, and what is written once on it for every backend.

A registry backend (memory, etcd, Consul, Kubernetes, ...) implements ``Backend``: list a
service's instances with a cursor (an etcd revision, a Consul index, a resourceVersion),
watch from a cursor where it can (else it is polled), register an instance under a lease,
keep the lease alive, deregister, list services, report its own health, close. On it:

- ``Publisher(backend, service, factory=None, *, tags=...)``: list, then watch (or poll);
  on an error, publish the stale set, back off (a tenacity wait strategy), and resume the
  watch from the last cursor, or list again when the backend says the cursor is gone
  (``CursorExpiredError``): no change is lost or applied twice;
- ``Registrar(backend, service, instance, *, ttl=...)``: sync and async twins, ``with`` /
  ``async with``, keep-alive at a third of the TTL, re-registration after a lost lease,
  deregistration on close and at interpreter exit. Errors, the same for every backend:
  ``register()`` and ``deregister()`` raise when the registry cannot be told (the caller
  asked, and must know; a registration that could not be removed lapses with its lease);
  ``close()`` logs instead (it runs in ``finally`` blocks and at exit, where raising would
  hide the error that matters); keep-alive and re-registration failures are logged and
  retried in the background, never raised into unrelated code;
- ``Registry(backend)``: by service name, etcd-registry's ``join``/``leave``/``lookup``/
  ``list`` and farp's ``register``/``deregister``/``discover(name, tags=)``/``watch``/
  ``list_services``/``health``, each with an async twin where it does I/O.
"""

from ._protocol import Backend, Batch, Change, CursorExpiredError, Health, Lease, LeaseLostError, Listing
from ._publisher import Publisher
from ._registrar import Registrar
from ._registry import Registry

__all__ = [
    "Backend",
    "Batch",
    "Change",
    "CursorExpiredError",
    "Health",
    "Lease",
    "LeaseLostError",
    "Listing",
    "Publisher",
    "Registrar",
    "Registry",
]
