"""The layer rules, checked over every module of broker_service/, device_agent/ and benchmarks/.

An import counts wherever it is written (module level, inside a function or a method) and in
every form (`import a.b`, `import a.b as c`, `from a import b`, relative `from ..a import b`):

- broker_service.core (the learning maths) imports none of broker_service.usecases, .server,
  .observe and .sim;
- broker_service.server and .observe do not import broker_service.sim (the simulator);
- broker_service.observe does not import broker_service.server;
- device_agent (it runs on the boards) imports nothing from broker_service;
- nothing in broker_service/, device_agent/ or benchmarks/ imports the tests (what the tests
  and the benchmarks share is broker_service.testing, which core, server and observe leave
  alone);
- broker_service.options (ConfigError and the broker URL, read by both server and observe)
  imports nothing of the project;
- the modules of broker_service and device_agent import one another without a cycle, hidden
  ones (an import inside a function) included.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ("broker_service", "device_agent")


@dataclass(frozen=True)
class Rule:
    """Modules under any of `importers` (dotted prefixes) import nothing under `forbidden`."""

    name: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]


PURE_CORE = Rule(
    "the learning maths stay free of use cases, service, observability and simulator",
    ("broker_service.core",),
    (
        "broker_service.usecases",
        "broker_service.server",
        "broker_service.observe",
        "broker_service.sim",
    ),
)
NO_SIMULATOR = Rule(
    "the service and observability stay free of the simulator",
    ("broker_service.server", "broker_service.observe"),
    ("broker_service.sim",),
)
OBSERVE_BESIDE_SERVER = Rule(
    "observability does not reach into the service",
    ("broker_service.observe",),
    ("broker_service.server",),
)
STANDALONE_AGENT = Rule(
    "the device agent needs nothing of the service", ("device_agent",), ("broker_service",)
)
NO_TESTS = Rule(
    "nothing shipped or benchmarked imports the tests", (*PROJECT, "benchmarks"), ("tests",)
)
BARE_OPTIONS = Rule(
    "what the service and the status view share stands on nothing of the project",
    ("broker_service.options",),
    PROJECT,
)
NO_TEST_RIGS = Rule(
    "the learning maths, the service and observability run without the test rigs",
    ("broker_service.core", "broker_service.server", "broker_service.observe"),
    ("broker_service.testing",),
)
RULES = (
    PURE_CORE,
    NO_SIMULATOR,
    OBSERVE_BESIDE_SERVER,
    STANDALONE_AGENT,
    NO_TESTS,
    BARE_OPTIONS,
    NO_TEST_RIGS,
)


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    """True when the dotted `name` is one of `prefixes` or a module inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imported_modules(source: str, module: str, package: bool = False) -> set[str]:
    """Every module an import in `source` (the text of `module`, dotted) may load: `import a.b`
    gives a.b; `from a import b` gives a and a.b; relative forms are resolved against `module`
    (against `module` itself when it is a package's __init__, `package` true)."""
    found: set[str] = set()
    parts = module.split(".")
    here = parts if package else parts[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            found.add(origin)
            found.update("%s.%s" % (origin, alias.name) for alias in node.names)
    return found


def violations(source: str, module: str, rule: Rule, package: bool = False) -> list[str]:
    """The imports in `source` (the text of `module`) that break `rule`, sorted."""
    if not within(module, rule.importers):
        return []
    return sorted(n for n in imported_modules(source, module, package) if within(n, rule.forbidden))


@dataclass(frozen=True)
class Source:
    """One Python file of the repository: its dotted module name and its text."""

    module: str
    package: bool
    text: str


def read_sources(tops: tuple[str, ...]) -> list[Source]:
    """Every .py file under the top-level folders `tops` as a Source (an __init__.py is its
    package's module)."""
    sources = []
    for top in tops:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            package = parts[-1] == "__init__"
            module = ".".join(parts[:-1] if package else parts)
            sources.append(Source(module, package, path.read_text()))
    return sources


def import_graph(sources: list[Source]) -> dict[str, set[str]]:
    """Each module of `sources` → the modules of `sources` it imports (itself left out)."""
    known = {s.module for s in sources}
    return {
        s.module: (imported_modules(s.text, s.module, s.package) & known) - {s.module}
        for s in sources
    }


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of `graph` (Tarjan's algorithm, iterative), each
    sorted; the modules of one component import one another, directly or around a loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    components.append(_pop_component(node, stack, on_stack))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def _pop_component(root: str, stack: list[str], on_stack: set[str]) -> list[str]:
    """Pop the component rooted at `root` off Tarjan's stack."""
    component = []
    while True:
        node = stack.pop()
        on_stack.discard(node)
        component.append(node)
        if node == root:
            return sorted(component)


def cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One import loop through the component's first module, as a path a → b → … → a."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    raise AssertionError("%s is not strongly connected" % component)


def import_cycles(sources: list[Source]) -> list[str]:
    """Each import cycle among `sources` as "a -> b -> a" (one per strongly connected component
    of more than one module)."""
    graph = import_graph(sources)
    return [" -> ".join(cycle_in(c, graph)) for c in strongly_connected(graph) if len(c) > 1]


@pytest.mark.parametrize(
    "source",
    [
        "import broker_service.sim.bench",
        "import broker_service.sim as s",
        "from broker_service.sim import simulation",
        "from broker_service.sim.fleet import SimulatedFleet",
        "from broker_service import sim",
        "from ..sim import bench",
        "from ..sim.clients import local_update",
        "def f():\n    from broker_service.sim.simulation import run\n    return run",
        "class C:\n    def m(self):\n        import broker_service.sim.demo",
    ],
)
def test_every_import_form_is_seen(source):
    assert violations(source, "broker_service.server.example", NO_SIMULATOR)


@pytest.mark.parametrize(
    "source",
    [
        "import broker_service.simulator",
        "from broker_service.core import nn",
        "from . import sim",  # broker_service.server.sim, not the simulator
        "from .simulation import x",
        "import numpy as np",
    ],
)
def test_other_imports_are_not_taken_for_a_forbidden_one(source):
    assert not violations(source, "broker_service.server.example", NO_SIMULATOR)


@pytest.mark.parametrize(
    "rule, module, source",
    [
        (PURE_CORE, "broker_service.core.fewshot", "from broker_service.usecases.base import E"),
        (PURE_CORE, "broker_service.core.nn", "def f():\n    from ..observe import logs"),
        (OBSERVE_BESIDE_SERVER, "broker_service.observe.status", "from ..server.config import C"),
        (STANDALONE_AGENT, "device_agent.agent", "import broker_service.core.nn as nn"),
        (NO_TESTS, "benchmarks.load", "def main():\n    from tests.brokers import Mosquitto"),
        (NO_TESTS, "device_agent.run", "import tests"),
        (BARE_OPTIONS, "broker_service.options", "from device_agent import limits"),
        (NO_TEST_RIGS, "broker_service.server.service", "from ..testing import waiting"),
    ],
)
def test_each_rule_sees_its_own_offenders(rule, module, source):
    assert violations(source, module, rule)


def test_relative_imports_of_a_package_resolve_against_the_package():
    found = imported_modules("from .bench import run", "broker_service.sim", package=True)
    assert "broker_service.sim.bench" in found


def test_a_rule_applies_only_to_its_importers():
    assert not violations("import broker_service.sim", "broker_service.cli", NO_SIMULATOR)
    assert violations("import tests.helpers", "benchmarks.load", NO_TESTS) == ["tests.helpers"]


def fake(module: str, text: str) -> Source:
    """A module's source for the cycle finder's own tests."""
    return Source(module, False, text)


def test_the_cycle_finder_reports_a_loop_hidden_in_a_function():
    sources = [
        fake("pkg.a", "from pkg.b import f\n"),
        fake("pkg.b", "def f():\n    from pkg import a\n    return a\n"),
        fake("pkg.c", "import pkg.a\n"),
    ]
    assert import_cycles(sources) == ["pkg.a -> pkg.b -> pkg.a"]


def test_the_cycle_finder_passes_an_acyclic_set():
    sources = [
        fake("pkg.a", "from pkg.b import f\nimport pkg.c\n"),
        fake("pkg.b", "def f():\n    from pkg import c\n    return c\n"),
        fake("pkg.c", "import json\nfrom . import missing\n"),
    ]
    assert import_cycles(sources) == []


def test_the_cycle_finder_reports_each_loop_once():
    sources = [
        fake("p.a", "import p.b"),
        fake("p.b", "import p.c"),
        fake("p.c", "import p.a"),
        fake("p.d", "import p.e"),
        fake("p.e", "import p.d\nimport p.a"),
    ]
    assert import_cycles(sources) == ["p.a -> p.b -> p.c -> p.a", "p.d -> p.e -> p.d"]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_the_rule_holds(rule):
    sources = [
        s for s in read_sources((*PROJECT, "benchmarks")) if within(s.module, rule.importers)
    ]
    assert sources, "no module is under %s" % (rule.importers,)
    offenders = {
        s.module: found for s in sources if (found := violations(s.text, s.module, rule, s.package))
    }
    assert offenders == {}


def test_the_project_has_no_import_cycle():
    sources = read_sources(PROJECT)
    assert len(sources) > 50
    assert import_cycles(sources) == []
