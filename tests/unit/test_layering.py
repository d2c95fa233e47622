"""The layers of DESIGN.md, checked on the source (an AST walk of every import, those under
`if TYPE_CHECKING:` included):

- xmppd/protocol is sans-IO and self-contained: it imports nothing else of xmppd;
- the core (xmppd/) imports no extension and no xmppd.server, except the composition
  root (xmppd/server.py) and the command line that starts it (cli.py, ctl.py);
- an extension imports another extension only if it declares it in `depends`;
- storage imports no extension.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = {"xmppd/server.py", "xmppd/cli.py", "xmppd/ctl.py"}
# Where each source folder is installed (setup.cfg): xmppd/extensions and xmppd/storage
# are symlinks to the top-level folders, walked there rather than twice.
PACKAGES = {"xmppd": "xmppd", "extensions": "xmppd.extensions", "storage": "xmppd.storage"}


def modules(folder: str):
    """(path relative to the repository, dotted module name) of every source file."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        relative = path.relative_to(ROOT)
        if any((ROOT / Path(*relative.parts[:i])).is_symlink() for i in range(1, len(relative.parts))):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield relative.as_posix(), ".".join([PACKAGES[folder], *parts[1:]])


def imports(path: str, module: str) -> set[str]:
    """The modules `path` imports; `from package import name` counts as package.name."""
    tree = ast.parse((ROOT / path).read_text(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def extension_of(module: str) -> str | None:
    """The top-level extension a module of xmppd.extensions belongs to (muc for
    xmppd.extensions.muc.room)."""
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["xmppd", "extensions"] else None


def declared_depends(package_paths: list[str]) -> set[str]:
    """The top-level extensions named in the `depends` lists of a package's classes."""
    named = set()
    for path in package_paths:
        for node in ast.walk(ast.parse((ROOT / path).read_text(), path)):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "depends" for t in node.targets):
                named.update(ast.literal_eval(node.value))
    return {name.split(".")[0] for name in named}


def violations() -> list[str]:
    found = []
    for path, module in modules("xmppd"):
        for imported in imports(path, module):
            if path.startswith("xmppd/protocol/"):
                if imported.startswith("xmppd") and not imported.startswith("xmppd.protocol"):
                    found.append(f"{path}: the sans-IO protocol layer imports {imported}")
            elif path not in COMPOSITION_ROOT and (
                imported.startswith("xmppd.extensions") or imported == "xmppd.server"
            ):
                found.append(f"{path}: the core imports {imported}")
    by_extension: dict[str, list[tuple[str, str]]] = {}
    for path, module in modules("extensions"):
        name = extension_of(module)
        if name is not None:
            by_extension.setdefault(name, []).append((path, module))
    for name, members in sorted(by_extension.items()):
        allowed = declared_depends([path for path, _ in members]) | {name}
        for path, module in members:
            for imported in imports(path, module):
                other = extension_of(imported)
                if imported == "xmppd.server":
                    found.append(f"{path}: an extension imports xmppd.server")
                elif other is not None and other not in allowed:
                    found.append(f"{path}: imports the extension {other!r} without declaring it in depends")
    for path, module in modules("storage"):
        for imported in imports(path, module):
            if imported.startswith("xmppd.extensions"):
                found.append(f"{path}: storage imports {imported}")
    return sorted(set(found))


def test_the_layers_hold():
    assert violations() == []


@pytest.mark.parametrize(
    "folder, source, expected",
    [
        ("xmppd/protocol/stanza.py", "from xmppd.session import Session\n", "the sans-IO protocol layer imports"),
        ("xmppd/router.py", "from xmppd.extensions.offline import DELAYED_SINCE\n", "the core imports"),
        (
            "xmppd/session.py",
            "if TYPE_CHECKING:\n    from xmppd.server import Server\n",
            "the core imports xmppd.server",
        ),
        ("extensions/csi.py", "from xmppd.extensions.mam import MamExtension\n", "without declaring it in depends"),
        ("storage/copy.py", "from xmppd.extensions.offline import DELAYED_SINCE\n", "storage imports"),
    ],
)
def test_a_broken_layer_is_named(monkeypatch, folder, source, expected):
    """Each rule fails when its layer is crossed (an import added to a real module)."""
    original = Path.read_text

    def read_text(self, *args, **kwargs):
        text = original(self, *args, **kwargs)
        return text + source if self == ROOT / folder else text

    monkeypatch.setattr(Path, "read_text", read_text)
    assert any(folder in v and expected in v for v in violations())
