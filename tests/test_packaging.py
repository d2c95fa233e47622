"""The wheel carries every package and data file under the xmppd namespace, and no bare
`extensions` or `storage` package (DESIGN.md: Layout); the editable install is silent."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parent.parent
MAPPING = {"xmppd": "xmppd", "extensions": "xmppd/extensions", "storage": "xmppd/storage"}
DATA_SUFFIXES = (".sql", ".cql")


def source_files():
    """(path in the wheel) for every package __init__ and data file of the source tree."""
    expected = set()
    for top, installed in MAPPING.items():
        for path in (ROOT / top).rglob("*"):
            relative = path.relative_to(ROOT / top)
            if "__pycache__" in relative.parts or (
                top == "xmppd" and relative.parts[:1] in (("extensions",), ("storage",))
            ):
                continue
            if path.name == "__init__.py" or path.suffix in DATA_SUFFIXES:
                expected.add(f"{installed}/{relative.as_posix()}")
    return expected


def test_wheel_holds_every_package_and_data_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        timeout=600,
    )
    wheel = next(tmp_path.glob("xmppd-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = source_files() - names
    assert not missing, f"setup.cfg misses these packages or data files: {sorted(missing)}"
    assert not any(name.startswith(("extensions/", "storage/")) for name in names)


def test_editable_install_prints_nothing(tmp_path):
    """`make run` and `make test` install xmppd editable; a newcomer's first screen shows no
    setuptools warning (with extensions/ and storage/ mapped by package_dir it printed one)."""
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-deps",
            "--target",
            str(tmp_path),
            "-e",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    assert install.stdout + install.stderr == ""
