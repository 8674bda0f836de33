"""Conventions the code base keeps by test: test modules stand alone, and every document the code cites exists."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
# A document path in prose: `docs/model.md`, `README.md`; not the `.md` of `comparison.csv/.md`.
CITED = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w-]+\.md)\b")


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) of every import; relative imports keep their leading dots."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def test_no_test_module_imports_another_test_module():
    """Shared scaffolding lives in conftest.py as fixtures; a test module importing another couples their fates."""
    local = {p.stem for p in TESTS.glob("*.py")}
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for line, module in _imports(ast.parse(path.read_text(), str(path))):
            head = module.split(".")[0]
            if module.startswith(".") or head == "tests" or head in local:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert offenders == [], "\n".join(offenders)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (module, class, function)."""
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef))]
    out = set()
    for node in nodes:
        body = getattr(node, "body", [])
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            out.add(id(first.value))
    return out


def _prose_and_literals(path: Path) -> tuple[list[tuple[int, str]], set[str]]:
    """(line, text) of the docstrings and comments of ``path``, and its other string constants."""
    source = path.read_text()
    tree = ast.parse(source, str(path))
    docs = _docstrings(tree)
    prose, literals = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docs:
                prose.append((node.lineno, node.value))
            else:
                literals.add(node.value)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            prose.append((token.start[0], token.string))
    return prose, literals


def test_every_document_the_code_cites_exists():
    """A docstring or comment that sends the reader to a document must name one in the repository.

    A name the code itself writes (``comparison.md`` of a sweep) is an output, not a citation."""
    sources = sorted((ROOT / "steering").rglob("*.py"))
    cited: list[tuple[Path, int, str]] = []
    written: set[str] = set()
    for path in sources:
        prose, literals = _prose_and_literals(path)
        written |= {Path(m).name for text in literals for m in CITED.findall(text)}
        cited += [(path, line, m) for line, text in prose for m in CITED.findall(text)]
    assert cited  # the pattern still finds the citations

    def exists(name: str) -> bool:
        candidates = [ROOT / name] if "/" in name else [ROOT / name, ROOT / "docs" / name]
        return any(c.is_file() for c in candidates) or Path(name).name in written

    missing = sorted({f"{p.relative_to(ROOT)}:{line}: {name}" for p, line, name in cited if not exists(name)})
    assert missing == [], "documents cited but not in the repository:\n" + "\n".join(missing)


def test_no_function_of_the_package_is_longer_than_80_lines():
    """Long functions were where the raw config and several jobs' worth of logic piled up; keep them short."""
    long = []
    for path in sorted((ROOT / "steering").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert long == [], "\n".join(long)


def test_only_the_hydra_side_sees_the_raw_config():
    """Apps parse the composed config once (steering.cli.hydra_app); below them code takes typed objects.

    ``DictConfig`` may appear only where Hydra hands it over: the adapter that builds and parses the
    schemas, and the sweep's Hydra callbacks and plan readers.
    """
    allowed = {ROOT / "steering" / "config" / "hydra.py", *(ROOT / "steering" / "sweep").glob("*.py")}
    mentions = [p for p in (ROOT / "steering").rglob("*.py") if "DictConfig" in p.read_text()]
    assert sorted(str(p.relative_to(ROOT)) for p in mentions if p not in allowed) == []
