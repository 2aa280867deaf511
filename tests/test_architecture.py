"""The house rules that keep the library readable: the import graph, the size of functions, the public surface.

- Imports run downward: no circles, no module importing another package's private module,
  and the core (the top-level modules) importing no backend, integration or extra.
- No function in the library over 60 lines.
- Every public name the README shows is importable from where it says, every ``__all__``
  lists names that exist, and every error the library raises can be caught by a public name.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import loadbalancer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "loadbalancer"
MAX_FUNCTION_LINES = 60
# the command line and the proxy sit at the top: they may import anything below them
TOP = {"loadbalancer.cli", "loadbalancer.__main__"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _imports(module: str) -> set[str]:
    """The library modules ``module`` imports (at any depth of its code: lazy imports count)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if _is_package(module) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            for alias in node.names:
                full = f"{name}.{alias.name}"
                found.add(full if full in MODULES else name)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: _imports(module) for module in MODULES}


def _home(module: str) -> str:
    """The package a module belongs to (a package is its own home)."""
    return module if _is_package(module) else module.rpartition(".")[0]


def test_the_import_graph_has_no_circles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in GRAPH[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == [], "modules importing each other (directly or around a circle): " + "; ".join(
        " <-> ".join(circle) for circle in circles
    )


def test_no_module_imports_another_packages_private_module() -> None:
    wrong = []
    for module, imported in GRAPH.items():
        for target in imported:
            name = target.rpartition(".")[2]
            if not name.startswith("_") or name.startswith("__"):
                continue
            owner = target.rpartition(".")[0]  # the package whose private module it is
            if not (_home(module) == owner or _home(module).startswith(owner + ".")):
                wrong.append(f"{module} imports {target}")
    assert wrong == [], "share it by moving it down into a room both may use: " + "; ".join(sorted(wrong))


def test_the_core_imports_no_backend_integration_or_extra() -> None:
    core = {m for m in MODULES if m.count(".") == 1 and not _is_package(m) and m not in TOP}
    core.add("loadbalancer")
    wrong = []
    for module in sorted(core):
        for target in GRAPH[module]:
            if target not in core and target.split(".")[1] not in {"backend", "health", "metrics"}:
                wrong.append(f"{module} imports {target}")
    assert wrong == [], "; ".join(wrong)


def test_the_proxys_http2_side_depends_on_its_http1_side_not_both_ways() -> None:
    assert "loadbalancer.proxy._h2" not in GRAPH["loadbalancer.proxy._http1"] or (
        "loadbalancer.proxy._http1" not in GRAPH["loadbalancer.proxy._h2"]
    )
    proxy = set().union(
        *(GRAPH[m] for m in MODULES if m == "loadbalancer.proxy" or m.startswith("loadbalancer.proxy."))
    )
    assert "loadbalancer.cli" not in proxy, "the command line and the proxy import each other never"


def test_no_function_is_over_sixty_lines() -> None:
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name} ({lines} lines, line {node.lineno})")
    assert long == [], "a function that needs scrolling is two functions: " + "; ".join(sorted(long))


# -- the public surface -------------------------------------------------------------------------


def _public_modules() -> list[str]:
    names = ["loadbalancer"]
    for info in pkgutil.walk_packages(loadbalancer.__path__, "loadbalancer."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _public_modules())
def test_every_name_in_all_exists(name: str) -> None:
    module = importlib.import_module(name)
    missing = [entry for entry in getattr(module, "__all__", ()) if not hasattr(module, entry)]
    assert missing == [], f"{name}.__all__ names what it does not have"


@pytest.mark.parametrize("name", _public_modules())
def test_a_public_module_lists_what_it_defines(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(getattr(module, "__all__", ()))
    defined = [
        attribute
        for attribute, value in vars(module).items()
        if not attribute.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == name
    ]
    assert hasattr(module, "__all__") or not defined, f"{name} defines {defined} but has no __all__"
    assert sorted(set(defined) - exported) == [], f"{name} defines these but leaves them out of __all__"


# exceptions that never reach a caller: the engine's verdict on an attempt, a parse failure turned into
# a DiscoveryError; and the command line's and the proxy's own (programs, not the library)
INTERNAL_ERRORS = {"loadbalancer._engine.Verdict", "loadbalancer.dnssrv._wire.Malformed"}


def test_every_error_the_library_defines_can_be_caught_by_a_public_name() -> None:
    reachable: set[type] = set()
    for name in _public_modules():
        module = importlib.import_module(name)
        reachable.update(v for v in (getattr(module, e) for e in getattr(module, "__all__", ())) if inspect.isclass(v))
    hidden = []
    for name in MODULES:
        if name in TOP or name.startswith("loadbalancer.proxy"):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, Exception)
                and value.__module__ == name
                and not value.__name__.startswith("_")
                and f"{name}.{value.__name__}" not in INTERNAL_ERRORS
            ):
                public_base = any(base in reachable and base is not Exception for base in value.__mro__[:-3])
                if value not in reachable and not public_base:
                    hidden.append(f"{name}.{value.__name__}")
                elif not issubclass(value, loadbalancer.Error) and value in reachable:
                    hidden.append(f"{name}.{value.__name__} (not a loadbalancer.Error)")
    assert hidden == [], "; ".join(sorted(hidden))


# the README and every page of the documentation site: a name shown there must exist where it says
_README = "\n".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])
# the integrations named as the libraries they integrate: in the README, ``grpc.X`` is grpcio's
# (ours are imported as ``lbgrpc``, ``lbaiohttp``), and ``lbgrpc.X`` is checked as ours
_ALIASES = {"lbgrpc": "grpc", "lbaiohttp": "aiohttp"}
_SUBPACKAGES = sorted(  # packages only: modules' names (publisher, retry) are variables' names in examples
    {
        m.rpartition(".")[2]
        for m in MODULES
        if m.count(".") == 1 and _is_package(m) and not m.rpartition(".")[2].startswith("_")
    }
    - {"grpc", "aiohttp"}
    | set(_ALIASES)
)


def _readme_imports() -> list[tuple[str, str]]:
    found = []
    for block in re.findall(r"```python\n(.*?)```", _README, re.S):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loadbalancer"):
                found.extend((node.module or "", alias.name) for alias in node.names)
    return sorted(set(found))


def _readme_references() -> list[str]:
    """The classes and calls the README's code shows: ``etcd.Publisher``, ``loadbalancer.targets.parse(``.

    Lower-case names not called are left out: they are metric names (``loadbalancer.hedge.wins``)
    and domain names in prose; ``NewX`` are go-kit's names in the mapping table.
    """
    pattern = r"\b((?:loadbalancer|" + "|".join(_SUBPACKAGES) + r")(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(\()?"
    spans = re.findall(r"`([^`\n]+)`", _README) + re.findall(r"```python\n(.*?)```", _README, re.S)
    names = set()
    for span in (s for s in spans if ":=" not in s):  # go-kit's and go-piloted's Go, in the mapping tables
        for name, called in re.findall(pattern, span):
            last = name.rpartition(".")[2]
            if (called or last[0].isupper()) and not re.match(r"New[A-Z]", last):
                names.add(name)
    return sorted(names)


@pytest.mark.parametrize(("module", "name"), _readme_imports())
def test_every_readme_import_works(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name) or importlib.util.find_spec(f"{module}.{name}")


@pytest.mark.parametrize("reference", _readme_references())
def test_every_name_the_readme_shows_exists_where_it_says(reference: str) -> None:
    parts = reference.split(".")
    parts[0] = _ALIASES.get(parts[0], parts[0])
    if parts[0] != "loadbalancer":
        parts.insert(0, "loadbalancer")
    obj: object = None
    for end in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:end]))
        except ImportError:
            continue
        for attribute in parts[end:]:
            if attribute in {"py", "toml", "md", "local"}:  # file names and DNS names in prose
                return
            assert hasattr(obj, attribute), f"the README shows {reference}, but {obj!r} has no {attribute!r}"
            obj = getattr(obj, attribute)
        return
    pytest.fail(f"the README shows {reference}, which cannot be imported")
