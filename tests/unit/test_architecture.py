"""The shape of the package, kept by tests: no import circles, small modules, no reaching into another
module's private names, the pipeline only wiring, SQL only in the store (docs/architecture.md says why)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "digest"

# Modules allowed past MAX_LINES for now, with the reason; the list only ever shrinks.
OVERSIZE: dict[str, str] = {}
MAX_LINES = 800
PIPELINE_MAX_LINES = 400

# Private names of other modules that are used on purpose (documented APIs spelled with an underscore,
# or a marker this package sets on its own object).
ALLOWED_PRIVATE = {
    "os._exit",  # the documented way to leave a forked child without running the parent's cleanup
    "etree._Element",  # lxml's documented element type
    "handler._digest",  # cli marks the log handler it installed itself
    # matching.py reads a pattern's parse tree for literals every match contains. No public API gives
    # that tree (sre_parse is a deprecated alias of the same module), and a parser of our own would
    # restate CPython's grammar; a failure there only costs speed (the pattern is searched everywhere).
    "re._parser",
    "re._constants",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, str]]:
    """(module imported, name imported) for every import in the file, top level and inside functions
    (a lazy import closes a circle as well). Imports under ``if TYPE_CHECKING:`` are left out: they
    name types only and never run (digest.learned names digest.tagger's Tagger that way)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                yield base, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ""


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for base, imported in _imports(name, path):
            target = f"{base}.{imported}" if f"{base}.{imported}" in MODULES else base
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports() -> None:
    graph = _graph()
    assert "digest.compose" in graph["digest.pipeline"]
    assert "digest.compose" in graph["digest.render_process"]  # a lazy import counts too
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert _cycles(_graph()) == []


def test_the_render_process_builds_a_composer_not_a_pipeline() -> None:
    assert "digest.pipeline" not in _graph()["digest.render_process"]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    limit = PIPELINE_MAX_LINES if name == "digest.pipeline" else MAX_LINES
    if name in OVERSIZE:
        pytest.skip(f"{name}: {OVERSIZE[name]}")
    assert lines < limit, f"{name} has {lines} lines (limit {limit}): split it by concern"


def test_the_oversize_list_only_names_modules_still_oversize() -> None:
    for name in OVERSIZE:
        assert len(MODULES[name].read_text(encoding="utf-8").splitlines()) >= MAX_LINES, f"drop {name} from OVERSIZE"


def test_no_module_uses_another_modules_private_names() -> None:
    """A leading underscore means "mine": calling it from elsewhere couples two modules' insides."""
    found = []
    for name, path in MODULES.items():
        for base, imported in _imports(name, path):
            private = imported.startswith("_") and not imported.startswith("__")
            if private and f"{base}.{imported}" not in ALLOWED_PRIVATE:
                found.append(f"{name}: from {base} import {imported}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                    and ast.unparse(node) not in ALLOWED_PRIVATE):
                found.append(f"{name}: {ast.unparse(node)}")
    assert found == []


# What runs SQL: the database layer and its drivers. Only digest.store may use them; everyone else asks
# the Store for typed values. Its exceptions may be caught anywhere (a database gone away is one line).
SQL_PACKAGES = ("sqlalchemy", "alembic", "psycopg", "sqlite3")
SQL_ALLOWED = {"sqlalchemy.exc"}
# Calls that run a statement, whatever the object: no module outside the store has a reason to make them.
SQL_CALLS = {"execute", "exec_driver_sql", "executemany", "executescript"}


def _sql_uses(name: str, path: Path) -> list[str]:
    """Where module ``name`` reaches the database other than through the Store's methods."""
    found = []
    for base, imported in _imports(name, path):
        if base.split(".")[0] in SQL_PACKAGES and base not in SQL_ALLOWED:
            found.append(f"{name}: imports {base}" + (f".{imported}" if imported else ""))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute):
            # The store's engine is its own: a query run on it from outside bypasses the typed methods.
            if node.attr == "engine" and ast.unparse(node.value).split(".")[-1] in ("store", "_store"):
                found.append(f"{name}: {ast.unparse(node)}")
            elif node.attr in SQL_CALLS:
                found.append(f"{name}: .{node.attr}(...)")
    return found


def test_the_sql_check_sees_sql(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from sqlalchemy.exc import SQLAlchemyError\n"
                      "def f(pipeline):\n    from sqlalchemy import select\n"
                      "    with pipeline.store.engine.connect() as conn:\n        conn.execute(select(1))\n")
    assert sorted(_sql_uses("digest.sample", sample)) == [
        "digest.sample: .execute(...)", "digest.sample: imports sqlalchemy.select",
        "digest.sample: pipeline.store.engine"]


def test_only_the_store_runs_sql() -> None:
    found = [use for name, path in sorted(MODULES.items())
             if name != "digest.store" and not name.startswith("digest.store.") for use in _sql_uses(name, path)]
    assert found == []


def test_the_package_needs_nothing_from_a_checkout() -> None:
    """No module of digest/ imports the tests or the benchmarks (a wheel has neither: `digest bench`
    finds them in a checkout at run time), and no benchmark ships in the package."""
    found = [f"{name}: {base}" for name, path in MODULES.items() for base, _ in _imports(name, path)
             if base.split(".")[0] in ("tests", "benchmarks")]
    assert found == []
    assert [name for name in MODULES if "bench" in name] == []


def test_config_names_exactly_the_mailers_mail_registers() -> None:
    from digest.config import MAILER_BACKENDS
    from digest.mail import MAILERS

    assert set(MAILERS) == MAILER_BACKENDS
