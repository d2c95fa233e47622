"""Medians over runs, the table of the three servers with xmppd's ratios, and bench/RESULTS.md."""

import datetime
import os
import platform
import statistics
import sys

SERVER_TITLES = {"xmppd": "xmppd", "prosody": "Prosody", "ejabberd": "ejabberd"}
# The table's ratio columns: xmppd divided by each of the others.
BASE = "xmppd"
OTHERS = [name for name in SERVER_TITLES if name != BASE]


def direction(key: str) -> str:
    if key.endswith(("_target_per_s", "_sent_per_s")):
        return ""  # what the generator offered: context
    if key.endswith(("_per_s", "_per_cpu_s")):
        return "higher"
    if key.endswith(("_ms", "_kib", "_mib")):
        return "lower"
    return ""


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def median_of_runs(runs: list) -> dict:
    """Median of each numeric figure over the runs that did not fail."""
    ok = [r for r in runs if "error" not in r]
    out = {"runs": len(ok)}
    if not ok:
        out["error"] = runs[-1].get("error", "no run") if runs else "no run"
        return out
    keys = []
    for r in ok:
        keys += [k for k in r if k not in keys]
    for k in keys:
        values = [r[k] for r in ok if k in r]
        if all(is_number(v) for v in values):
            m = statistics.median(values)
            out[k] = round(m, 3) if isinstance(m, float) else m
        else:
            out[k] = values[0]
    failed = len(runs) - len(ok)
    if failed:
        out["failed_runs"] = failed
        out["last_error"] = next(r["error"] for r in reversed(runs) if "error" in r)
    return out


def machine() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loop": loop,
    }


def fmt(v) -> str:
    if v is None:
        return "—"
    if is_number(v):
        if isinstance(v, int) or abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


SKIP = {"runs", "failed_runs", "last_error", "error"}


def table(summary: dict, servers: list) -> str:
    """Markdown table: one row per figure, a column per server, then xmppd's ratio to
    each of the others (for figures with a direction)."""
    head = [SERVER_TITLES[n] for n in SERVER_TITLES] + [f"{SERVER_TITLES[BASE]}/{SERVER_TITLES[n]}" for n in OTHERS]
    lines = [
        "| scenario | figure | better | " + " | ".join(head) + " |",
        "|---|---|---|" + "---:|" * len(head),
    ]
    for scenario, per_server in summary.items():
        results = {n: per_server.get(n, {}) for n in SERVER_TITLES}
        keys = []
        for d in results.values():
            keys += [k for k, v in d.items() if k not in keys and k not in SKIP and is_number(v)]
        for k in keys or [None]:
            cells = []
            for n, r in results.items():
                if n not in servers:
                    cells.append("not run")
                elif "error" in r:
                    cells.append("error")
                else:
                    cells.append(fmt(r.get(k) if k else None))
            for n in OTHERS:
                xv = results[BASE].get(k) if k else None
                ov = results[n].get(k) if k else None
                cells.append(f"{xv / ov:.2f}" if k and direction(k) and is_number(xv) and is_number(ov) and ov else "—")
            lines.append(f"| {scenario} | {k or '—'} | {direction(k) if k else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def short(text: str, limit=300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else "…" + text[-limit:]


def errors(summary: dict) -> list:
    """One line per distinct error, naming the scenarios it hit."""
    seen = {}
    for scenario, per_server in summary.items():
        for server, r in per_server.items():
            if "error" in r:
                msg = r["error"]
            elif r.get("failed_runs"):
                msg = f"{r['failed_runs']} run(s) failed, last: {r['last_error']}"
            else:
                continue
            seen.setdefault((server, short(msg)), []).append(scenario)
    return [f"- {SERVER_TITLES.get(server, server)} ({', '.join(scs)}): {msg}" for (server, msg), scs in seen.items()]


def runs_text(runs: dict) -> str:
    """ "3 run(s)", or "3 run(s) (slow_drain: 1)" when scenarios differ."""
    common = statistics.mode(runs.values())
    others = [f"{name}: {n}" for name, n in runs.items() if n != common]
    return f"{common} run(s)" + (f" ({', '.join(others)})" if others else "")


def results_markdown(summary, servers, versions, runs, quick, command, notes=(), load=None) -> str:
    m = machine()
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        "# Benchmark results",
        "",
        f"Run on {now} with `{command}`" + (" (quick sizes: a smoke check, not a measurement)." if quick else "."),
        "",
        f"- Machine: {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}",
        f"- Load generator: Python {m['python']}, {m['loop']}, pinned to CPU 1; "
        "each server pinned to CPU 0 (`taskset -c 0`)",
        "- Servers: " + ", ".join(versions.get(s, s) for s in servers),
        f"- Figures are medians of {runs_text(runs)}; each run starts a fresh server process.",
    ]
    if load:
        parts.append(
            f"- Load average (1 min) seen during the run: min {min(load):.1f}, max {max(load):.1f} "
            f"on {m['nproc']} CPUs"
            + (
                " — the machine was shared with other work, so the "
                "wall-clock figures are low and noisy; the `*_per_cpu_s` figures (work per second "
                "of server CPU) are the steadier comparison."
                if max(load) > (m["nproc"] or 1)
                else "."
            )
        )
    parts += [
        "",
        table(summary, servers),
        "",
    ]
    errs = errors(summary)
    if errs:
        parts += ["Errors:", ""] + errs + [""]
    if notes:
        parts += list(notes) + [""]
    parts += [
        "What each figure means: bench/README.rst. `better` says which way is better;",
        "the ratios are xmppd divided by Prosody and xmppd divided by ejabberd (rows without",
        "a direction are context: CPU shares, sizes, error counts). `*_cpu_pct` figures are",
        "shares of one CPU summed over the server's threads; `*_cpu_wait_pct` is time spent",
        "runnable but waiting for a CPU, a sign of other load on the machine (summed over",
        "threads too: ejabberd's Erlang VM runs a dozen threads on its one CPU).",
        "",
    ]
    return "\n".join(parts)


def record_section(path, heading: str, text: str) -> None:
    """Put `text` in the results file in place of the section under `heading` (up to the
    next "## " heading), or at its end; the other sections are kept."""
    try:
        old = open(path).read()
    except OSError:
        old = ""
    start = old.find(heading)
    if start < 0:
        before, after = old.rstrip("\n"), ""
    else:
        end = old.find("\n## ", start + len(heading))
        before, after = old[:start].rstrip("\n"), ("" if end < 0 else old[end:])
    with open(path, "w") as out:
        out.write((before + "\n\n" if before else "") + text.rstrip("\n") + "\n" + after)


def log(msg: str):
    ts = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[{ts}] {msg}", file=sys.stderr, flush=True)
