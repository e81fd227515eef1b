"""The production packages stay free of the simulator: nothing in broker_service.core, .server or
.observe imports broker_service.sim (module level or inside a function, any import form)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("core", "server", "observe")
FORBIDDEN = "broker_service.sim"


def imported_modules(source: str, module: str) -> set[str]:
    """Every module an import in `source` (the text of `module`, dotted) may load: `import a.b`
    gives a.b; `from a import b` gives a and a.b; relative forms are resolved against `module`."""
    found: set[str] = set()
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join([*base, *([node.module] if node.module else [])])
            found.add(origin)
            found.update("%s.%s" % (origin, alias.name) for alias in node.names)
    return found


def sim_imports(source: str, module: str) -> list[str]:
    """The imports of broker_service.sim (or a module inside it) in `source`."""
    return sorted(
        name
        for name in imported_modules(source, module)
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    )


def production_modules() -> list[Path]:
    """The source files of the packages that must not depend on the simulator."""
    return sorted(p for sub in PRODUCTION for p in (ROOT / "broker_service" / sub).rglob("*.py"))


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
def test_every_import_form_of_the_simulator_is_seen(source):
    assert sim_imports(source, "broker_service.core.example")


@pytest.mark.parametrize(
    "source",
    [
        "import broker_service.simulator",
        "from broker_service.server import service",
        "from . import sim",  # broker_service.core.sim, not the simulator
        "from .simulation import x",
        "import numpy as np",
    ],
)
def test_other_imports_are_not_taken_for_the_simulator(source):
    assert not sim_imports(source, "broker_service.core.example")


def test_production_packages_do_not_import_the_simulator():
    modules = production_modules()
    assert len(modules) > 10
    offenders = {}
    for path in modules:
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found = sim_imports(path.read_text(), dotted)
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}
