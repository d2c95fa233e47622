"""Java programs the tests run (Cassandra, the Smack integration tests), resolved once
from Maven Central into a cache outside the repository.

``resolve_jars(pom, home, marker)`` runs ``mvn dependency:copy-dependencies`` on a pom
that only declares dependencies, into ``home/lib`` under ``$XDG_CACHE_HOME/xmppd``
(``~/.cache`` by default). Later runs find ``marker`` there and never start Maven.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

RESOLVE_TIMEOUT = 900.0


class MavenUnavailable(RuntimeError):
    """Maven is missing or could not resolve the dependencies; the message says why."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "xmppd"


def resolve_jars(pom: Path, home: Path, marker: str, properties: dict[str, str] | None = None) -> tuple[Path, bool]:
    """The directory of the runtime jars of `pom`, resolving them if `marker` is missing.

    Returns ``(lib_dir, from_cache)``. A lock file serializes concurrent test runs; the
    jars are copied into a scratch directory that is renamed into place only once Maven
    succeeded, so an interrupted download never looks complete.
    """
    lib = home / "lib"
    if (lib / marker).is_file():
        return lib, True
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (lib / marker).is_file():
            return lib, True
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MavenUnavailable(f"Maven (mvn) is not installed: cannot resolve {marker}")
        scratch = Path(tempfile.mkdtemp(prefix="lib.", dir=home))
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(pom),
            *(f"-D{key}={value}" for key, value in (properties or {}).items()),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={scratch}",
            "-DincludeScope=runtime",
        ]
        try:
            done = subprocess.run(command, cwd=home, capture_output=True, text=True, timeout=RESOLVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            shutil.rmtree(scratch, ignore_errors=True)
            raise MavenUnavailable(f"Maven did not resolve {marker} within {RESOLVE_TIMEOUT:.0f}s") from None
        if done.returncode != 0:
            shutil.rmtree(scratch, ignore_errors=True)
            output = (done.stdout + done.stderr).strip()[-3000:]
            raise MavenUnavailable(f"Maven could not resolve {marker}:\n{output}")
        if lib.exists():
            shutil.rmtree(lib)
        scratch.rename(lib)
    if not (lib / marker).is_file():
        raise MavenUnavailable(f"{marker} missing from {lib}")
    return lib, False
