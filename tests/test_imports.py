import importlib
import pkgutil

import pytest

TOP_LEVEL = ["e2e_voice", "train", "eval", "cascade_baseline"]


def _modules() -> list[str]:
    names = []
    for top in TOP_LEVEL:
        pkg = importlib.import_module(top)
        names.append(top)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{top}.")]
    return names


@pytest.mark.parametrize("name", _modules())
def test_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_library_never_imports_apps() -> None:
    """e2e_voice must not depend on train/, eval/ or cascade_baseline/ (they depend on it)."""
    import ast
    from pathlib import Path

    import e2e_voice

    root = Path(e2e_voice.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            offenders += [f"{path.name}: {m}" for m in mods if m.split(".")[0] in TOP_LEVEL[1:]]
    assert not offenders, offenders
