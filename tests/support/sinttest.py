"""The Smack Integration Test Framework ("sinttest", the conformance suite of the XMPP
Interop Testing project) run against a real xmppd.

1. ``resolve_sinttest()`` resolves ``org.igniterealtime.smack:smack-integration-test``
   and its runtime jars from Maven Central once (``tests/support/sinttest/pom.xml``,
   cached by tests/support/maven.py under ``~/.cache/xmppd/sinttest-<version>``);
   with ``omemo=True`` also Smack's OMEMO implementation (``sinttest-omemo-<version>``),
   which ``OmemoSignalSinttest.java`` registers before it starts the framework: without
   it the suite's OMEMO classes are impossible ("No OmemoService registered").
2. ``sinttest_server(directory)`` makes an XmppdProcess that sinttest can reach: the
   framework has no port setting and always connects to port 5222, so the server
   listens on 5222 of an address of its own in 127.0.0.0/8 (plain text, which xmppd
   allows from loopback peers with ``require_encryption = false``; sinttest runs with
   ``securityMode=disabled``). Accounts are made by the suite through XEP-0133
   add-user as the host's admin (``accountRegistration=serviceAdministration``).
3. ``run_sinttest(server, address)`` runs the framework and parses its closing report
   into a ``SinttestRun``: each test (``Class.method``) passed, failed or impossible
   (the framework's "TestNotPossible": the server lacks what the test needs), and the
   test classes that were impossible as a whole.

4. Smack runs with one fix of its own (``muc_fix``): 4.5.0-beta5's MultiUserChat wakes
   a ``join()`` as soon as its presence listener has seen the reflected self-presence
   (status 110) and only then hands that presence to the room's participant listeners.
   A listener the caller adds right after ``join()`` returns can still be handed the
   join's own self-presence. MultiUserChatOccupantIntegrationTest's
   mucChangeNicknameInformationTest does exactly that and then counts one presence too
   many (about 1 run in 10, against xmppd and against Prosody 0.12 alike). The fix wakes
   ``join()`` after the participant listeners saw the presence; nothing on the wire and
   no assertion of the suite changes. It is compiled once from Smack's own sources (from
   Maven Central) into the cache, and refuses to apply to another Smack version.

``python -m tests.support.sinttest [TestClass ...]`` runs the whole suite (or those
classes) and prints the results per class (``XMPPD_SINTTEST_OMEMO=1``: with OMEMO;
``XMPPD_SINTTEST_STOCK=1``: with Smack as released, without the fix).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.maven import cache_root, resolve_jars
from tests.support.server import XmppdProcess

SMACK_VERSION = os.environ.get("XMPPD_SINTTEST_VERSION", "4.5.0-beta5")
POM = Path(__file__).with_name("sinttest") / "pom.xml"
MAIN = "org.igniterealtime.smack.inttest.SmackIntegrationTestFramework"
OMEMO_MAIN = Path(__file__).with_name("sinttest") / "OmemoSignalSinttest.java"  # run as source
XMPP_PORT = 5222  # fixed in sinttest: its configuration has no port
ADMIN = ("admin", "sinttest-admin")
# xmppd speaks XMPP over TCP only: the WebSocket connection types of the suite's
# low-level tests abort the whole run (a dead end in Smack's connection state graph).
NO_WEBSOCKET = ("modular-websocket-okhttp", "modular-websocket-java11")
PASSED, FAILED, IMPOSSIBLE = "passed", "failed", "impossible"

# One line per log record: "LEVEL: message" (continuation lines follow for
# multi-line messages and stack traces, and are ignored).
_LOG_FORMAT = "%4$s: %5$s%6$s%n"
_RESULT = re.compile(
    r"^(?:INFO|SEVERE): (?P<test>\w+\.\w+) \((?P<conn>[^)]*)\) "
    r"(?:(?P<ok>\u2714)$|failed: (?P<why>.*)$)"
)
_IMPOSSIBLE = re.compile(
    r"^INFO: Could not run (?P<what>\S+)(?: \((?P<conn>[^)]*)\))? "
    r"because: (?P<why>.*)$"
)
_SUMMARY = re.compile(r"finished: (\d+)/(\d+) \[(\d+) failed\]")


@dataclass(frozen=True)
class Outcome:
    status: str  # passed | failed | impossible
    reason: str = ""


@dataclass
class SinttestRun:
    tests: dict[str, Outcome] = field(default_factory=dict)  # "Class.method" (+ " [conn]")
    impossible_classes: dict[str, str] = field(default_factory=dict)  # fully qualified name
    summary: tuple[int, int, int] | None = None  # passed, available, failed
    returncode: int = 0
    seconds: float = 0.0
    output: str = ""

    def by_status(self, status: str) -> dict[str, Outcome]:
        return {name: o for name, o in self.tests.items() if o.status == status}

    def of_class(self, simple_name: str) -> dict[str, Outcome]:
        return {name: o for name, o in self.tests.items() if name.split(".", 1)[0] == simple_name}

    def counts(self) -> Counter:
        return Counter(outcome.status for outcome in self.tests.values())

    def report(self) -> str:
        lines = []
        for name, outcome in sorted(self.tests.items()):
            lines.append(f"{outcome.status:10} {name}  {outcome.reason[:200]}".rstrip())
        for name, why in sorted(self.impossible_classes.items()):
            lines.append(f"{'impossible':10} {name} (class)  {why[:200]}")
        counts = self.counts()
        lines.append(
            f"sinttest: {counts[PASSED]} passed, {counts[FAILED]} failed, "
            f"{counts[IMPOSSIBLE]} impossible, {len(self.impossible_classes)} "
            f"classes impossible; {self.seconds:.0f}s"
        )
        return "\n".join(lines)


def parse(output: str) -> SinttestRun:
    """Read the framework's closing report (its JUL result processor)."""
    run = SinttestRun(output=output)
    for line in output.splitlines():
        if match := _RESULT.match(line):
            name = _name(match["test"], match["conn"])
            if match["ok"]:
                run.tests[name] = Outcome(PASSED)
            else:
                run.tests[name] = Outcome(FAILED, match["why"])
        elif match := _IMPOSSIBLE.match(line):
            if match["conn"] is None and "." in match["what"] and match["what"][0].islower():
                run.impossible_classes[match["what"]] = match["why"]
            else:
                run.tests[_name(match["what"], match["conn"] or "Normal")] = Outcome(IMPOSSIBLE, match["why"])
        elif match := _SUMMARY.search(line):
            run.summary = tuple(int(group) for group in match.groups())
    return run


def _name(test: str, connection: str) -> str:
    """``Class.method``, with the connection type for the low-level tests that run once
    per type (``Class.method [LowLevel, tcp]``)."""
    return test if connection == "Normal" else f"{test} [{connection}]"


def resolve_sinttest(version: str = SMACK_VERSION, *, omemo: bool = False) -> Path:
    if omemo:
        lib, _ = resolve_jars(
            POM,
            cache_root() / f"sinttest-omemo-{version}",
            f"smack-omemo-signal-{version}.jar",
            {"smack.version": version, "omemo": "true"},
        )
        return lib
    lib, _ = resolve_jars(
        POM, cache_root() / f"sinttest-{version}", f"smack-integration-test-{version}.jar", {"smack.version": version}
    )
    return lib


# muc_fix: (Smack's text, what replaces it), each found exactly once in MultiUserChat.java
# of FIXED_VERSION. The presence listener notes that join() may go on, and wakes it once
# the participant listeners have run, even if one of them throws.
FIXED_VERSION = "4.5.0-beta5"
MUC_SOURCE = "org/jivesoftware/smackx/muc/MultiUserChat.java"
_MUC_FIX = (
    ("switch (presence.getType()) {", "boolean wakeJoin = false;\ntry {\nswitch (presence.getType()) {"),
    (
        "processedReflectedSelfPresence = true;\n"
        "                        synchronized (this) {\n"
        "                            notify();\n"
        "                        }",
        "wakeJoin = true;",
    ),
    (
        "listener.processPresence(presence);\n                }",
        "listener.processPresence(presence);\n                }\n"
        "} finally {\n"
        "    if (wakeJoin) {\n"
        "        processedReflectedSelfPresence = true;\n"
        "        synchronized (this) {\n"
        "            notify();\n"
        "        }\n"
        "    }\n"
        "}",
    ),
)


def muc_fix(lib: Path, version: str = SMACK_VERSION) -> Path:
    """A directory holding Smack's MultiUserChat classes with the fix (point 4 of the
    module's docstring), to go before Smack's jars on the class path."""
    home = cache_root() / f"sinttest-{version}"
    classes = home / "muc-fix"
    if (classes / MUC_SOURCE.replace(".java", ".class")).is_file():
        return classes
    if version != FIXED_VERSION:
        raise RuntimeError(
            f"the MultiUserChat fix is written for Smack {FIXED_VERSION}, not {version}: check "
            "whether this Smack still wakes join() before its listeners (XMPPD_SINTTEST_STOCK=1)"
        )
    javac = shutil.which("javac")
    if javac is None:
        raise RuntimeError("javac (a JDK) is needed to build Smack's MultiUserChat fix")
    sources, _ = resolve_jars(
        POM,
        home / "sources",
        f"smack-extensions-{version}-sources.jar",
        {"smack.version": version, "classifier": "sources", "includeArtifactIds": "smack-extensions"},
    )
    with zipfile.ZipFile(sources / f"smack-extensions-{version}-sources.jar") as jar:
        source = jar.read(MUC_SOURCE).decode()
    for stock, fixed in _MUC_FIX:
        assert source.count(stock) == 1, f"Smack's {MUC_SOURCE} changed: {stock!r}"
        source = source.replace(stock, fixed)
    scratch = Path(tempfile.mkdtemp(prefix="muc-fix.", dir=home))
    (scratch / "src").mkdir()
    (scratch / "src" / "MultiUserChat.java").write_text(source)
    done = subprocess.run(
        [
            javac,
            "-nowarn",
            "-encoding",
            "UTF-8",
            "-cp",
            f"{lib}/*",
            "-d",
            str(scratch / "classes"),
            str(scratch / "src" / "MultiUserChat.java"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeError(f"javac could not build the MultiUserChat fix:\n{done.stderr[-3000:]}")
    try:
        (scratch / "classes").rename(classes)  # another run may have built it meanwhile
    except OSError:
        pass
    shutil.rmtree(scratch, ignore_errors=True)
    return classes


def free_loopback_address() -> str:
    """An address in 127.0.0.0/8 whose port 5222 is free (not 127.0.0.1, where a
    developer's own server may listen)."""
    for _ in range(50):
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket() as probe:
            try:
                probe.bind((address, XMPP_PORT))
            except OSError:
                continue
        return address
    raise RuntimeError("no loopback address with a free port 5222")


def sinttest_server(directory: Path, extra_config: str = "") -> tuple[XmppdProcess, str]:
    """An unstarted xmppd on port 5222 of a loopback address of its own, and that address."""
    address = free_loopback_address()
    server = XmppdProcess(
        directory,
        extra_config=extra_config,
        port=XMPP_PORT,
        c2s_section=f'interfaces = ["{address}"]\nrequire_encryption = false\nauth_failure_delay = 0.0',
    )
    return server, address


def run_sinttest(
    server: XmppdProcess,
    address: str,
    *,
    enabled: tuple[str, ...] = (),
    disabled: tuple[str, ...] = (),
    reply_timeout_ms: int = 5000,
    timeout: float = 1800.0,
    debug: bool = False,
    omemo: bool = False,
    stock: bool = False,
) -> SinttestRun:
    """Run the suite (the `enabled` test classes or Class.method names only, if given)
    against a started `server`; creates the host admin the suite makes accounts with.
    `omemo`: with Smack's OMEMO service registered (for the OMEMO classes). `stock`:
    Smack as released, without ``muc_fix``."""
    lib = resolve_sinttest(omemo=omemo)
    classpath = f"{lib}/*" if stock else f"{muc_fix(lib)}{os.pathsep}{lib}/*"
    try:
        server.adduser(*ADMIN)
    except ValueError:
        pass  # made by an earlier run on this server
    properties = {
        "service": server.domain,
        "host": address,
        "securityMode": "disabled",
        "accountRegistration": "serviceAdministration",
        "adminAccountUsername": ADMIN[0],
        "adminAccountPassword": ADMIN[1],
        "replyTimeout": str(reply_timeout_ms),
        "disabledConnections": ",".join(NO_WEBSOCKET),
    }
    if enabled:
        properties["enabledTests"] = ",".join(enabled)
    if disabled:
        properties["disabledTests"] = ",".join(disabled)
    if debug:
        properties["debugger"] = "console"
    command = [
        "java",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Djava.util.logging.SimpleFormatter.format={_LOG_FORMAT}",
        *(f"-Dsinttest.{key}={value}" for key, value in properties.items()),
        "-cp",
        classpath,
        str(OMEMO_MAIN) if omemo else MAIN,
    ]
    began = time.monotonic()
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:
        output = expired.output if isinstance(expired.output, str) else (expired.output or b"").decode(errors="replace")
        raise RuntimeError(f"sinttest did not finish within {timeout:.0f}s:\n{output[-5000:]}") from None
    run = parse(done.stdout)
    run.returncode = done.returncode
    run.seconds = time.monotonic() - began
    return run


def main(argv: list[str]) -> None:
    enabled = tuple(argv[1:])
    with tempfile.TemporaryDirectory(prefix="xmppd-sinttest-") as directory:
        server, address = sinttest_server(Path(directory))
        server.start()
        try:
            run = run_sinttest(
                server,
                address,
                enabled=enabled,
                reply_timeout_ms=int(os.environ.get("XMPPD_SINTTEST_TIMEOUT_MS", "5000")),
                debug=bool(os.environ.get("XMPPD_SINTTEST_DEBUG")),
                omemo=bool(os.environ.get("XMPPD_SINTTEST_OMEMO")),
                stock=bool(os.environ.get("XMPPD_SINTTEST_STOCK")),
            )
        finally:
            server.stop()
            log = os.environ.get("XMPPD_SINTTEST_LOG")
            if log:
                Path(log).write_text(server.log)
                Path(log + ".sinttest").write_text(run.output if "run" in locals() else "")
    print(run.report())


if __name__ == "__main__":
    main(sys.argv)
