from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadbalancer import Instance, InvalidInstanceError


@pytest.mark.parametrize(
    ("text", "host", "port", "string"),
    [
        ("127.0.0.1:8080", "127.0.0.1", 8080, "127.0.0.1:8080"),
        ("api.internal:443", "api.internal", 443, "api.internal:443"),
        ("API.Example.COM.:80", "api.example.com", 80, "api.example.com:80"),
        ("[::1]:80", "::1", 80, "[::1]:80"),
        ("[2001:DB8:0:0::1]:53", "2001:db8::1", 53, "[2001:db8::1]:53"),
        ("_svc-1.x:65535", "_svc-1.x", 65535, "_svc-1.x:65535"),
    ],
)
def test_parse(text: str, host: str, port: int, string: str) -> None:
    instance = Instance.parse(text)
    assert (instance.host, instance.port) == (host, port)
    assert str(instance) == string
    assert Instance.parse(str(instance)) == instance


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("foo:bar", "port is not a number"),
        ("foo", "missing ':port'"),
        ("foo:", "port is empty"),
        (":80", "host is empty"),
        ("::1:80", "IPv6 addresses need brackets"),
        ("http://h:80", "looks like a URL; give 'host:port' without 'http://'"),
        ("grpc+tls://api.internal:443/", "looks like a URL; give 'host:port' without 'grpc+tls://'"),
        ("  localhost:1  ", "white space around it (did you mean 'localhost:1'?)"),
        ("localhost:1\n", "white space around it (did you mean 'localhost:1'?)"),
        ("[::1]80", "missing ':port' after ']'"),
        ("[::1:80", "missing ']'"),
        ("[example.com]:80", "is not an IPv6 address"),
        ("[::g]:80", "is not a valid IPv6 address"),
        ("host:0", "port 0 is out of range 1-65535"),
        ("host:70000", "port 70000 is out of range 1-65535"),
        ("host:-1", "port -1 is out of range 1-65535"),
        ("host:\uff180", "port is not a number"),
        ("bad host:80", "is not a valid host name"),
        ("-bad.example:80", "is not a valid host name"),
        ("a..b:80", "is not a valid host name"),
        ("999.1.1.1:80", "is not a valid IPv4 address"),
        (f"{'a' * 254}:80", "longer than 253"),
    ],
)
def test_parse_errors_quote_the_value(text: str, reason: str) -> None:
    with pytest.raises(InvalidInstanceError) as caught:
        Instance.parse(text)
    assert str(caught.value).startswith(f"invalid instance {text!r}: ")
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert caught.value.value == text


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(InvalidInstanceError, match="expected a 'host:port' string, got int"):
        Instance.parse(8080)  # type: ignore[arg-type]


def test_the_documented_message() -> None:
    with pytest.raises(ValueError, match=r"^invalid instance 'foo:bar': port is not a number$"):
        Instance.parse("foo:bar")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"weight": -1}, "weight must be a non-negative integer"),
        ({"priority": 1.5}, "priority must be a non-negative integer"),
        ({"ttl": -3}, "ttl must be a non-negative number"),
        ({"tags": "blue"}, "tags must be a sequence of strings"),
    ],
)
def test_attribute_errors(kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidInstanceError, match=reason):
        Instance("h", 1, **kwargs)  # type: ignore[arg-type]


def test_attributes_identity_and_hash() -> None:
    a = Instance("h", 1, weight=5, priority=1, tags=["x"], metadata={"zone": "a"})
    b = Instance("h", 1, weight=5, priority=1, tags=("x",), metadata={"zone": "a"})
    assert a == b
    assert hash(a) == hash(b)
    assert a.tags == ("x",)
    assert a.metadata["zone"] == "a"
    with pytest.raises(TypeError):
        a.metadata["zone"] = "b"  # type: ignore[index]
    assert a != Instance("h", 1, weight=6, priority=1, tags=("x",), metadata={"zone": "a"})
    assert a != Instance("h", 1, weight=5, priority=1, tags=("x",), metadata={"zone": "b"})
    assert len({a, b, Instance("h", 2)}) == 2
    assert repr(Instance("h", 1)) == "Instance(host='h', port=1)"
    assert "weight=5" in repr(a)


_label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True).filter(lambda s: not s.isdigit())
_hostnames = st.lists(_label, min_size=1, max_size=4).map(".".join)
_hosts = st.one_of(
    _hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(host=_hosts, port=st.integers(1, 65535), upper=st.booleans())
def test_round_trip(host: str, port: int, upper: bool) -> None:
    instance = Instance(host.upper() if upper else host, port)
    text = str(instance)
    assert Instance.parse(text) == instance
    assert str(Instance.parse(text)) == text
    if ":" in instance.host:
        assert text.startswith("[")
        assert ipaddress.IPv6Address(instance.host) == ipaddress.IPv6Address(host)


def test_records_may_have_white_space_around_them() -> None:
    # a registry record is documented to ignore surrounding white space; a bare instance string is not
    from loadbalancer.instance import parse_record

    assert parse_record(b"  10.0.0.7:8080\n") == Instance("10.0.0.7", 8080)
    assert parse_record(' {"host": " 10.0.0.7 ", "port": 8080}\n') == Instance("10.0.0.7", 8080)
