"""python -m bench: run the scenarios against xmppd, Prosody and ejabberd, print and record a table.

See bench/README.rst. Every load loop is bounded in count and time, and every
connection goes to a server this process started on 127.0.0.1.
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
from pathlib import Path

from . import archive, cluster_engine, hot_path, report, scenarios, servers, xmpp
from .report import log

GENERATOR_CPU = 1
PREPARE_TIMEOUT = 1200.0
SERVERS = {"xmppd": servers.Xmppd, "prosody": servers.Prosody, "ejabberd": servers.Ejabberd}
# Scenarios that start no XMPP server, run only when named.
STANDALONE = {"archive": archive.run, "cluster_engine": cluster_engine.run, "hot_path": hot_path.run}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--only",
        action="append",
        choices=list(SERVERS),
        help="run against this server only (repeatable); default: all three",
    )
    p.add_argument(
        "--scenario",
        action="append",
        choices=[*scenarios.SCENARIOS, *STANDALONE],
        help="run this scenario (repeatable); default: all but 'archive' (the storage "
        "backends' archive throughput, SQLite and Cassandra: bench/archive.py) and "
        "'cluster_engine' (Redis and NATS for the cluster: bench/cluster_engine.py) and 'hot_path' "
        "(CPU per message inside xmppd, archive off and on: bench/hot_path.py)",
    )
    p.add_argument("--runs", type=int, help="runs per scenario and server (default 3, slow_drain 1; quick 1)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    p.add_argument(
        "--results", help="markdown file for the table (default bench/RESULTS.md; --quick writes none unless given)"
    )
    p.add_argument(
        "--state-dir", help="accounts and server data kept between runs (default $XDG_CACHE_HOME/xmppd-bench)"
    )
    p.add_argument("--fresh", action="store_true", help="wipe the state dir of the selected servers first")
    p.add_argument("--xmppd", help="xmppd executable (default .venv/bin/xmppd)")
    p.add_argument(
        "--sources", type=int, default=16, help="spread client connections over 127.0.0.1..127.0.0.N (default 16)"
    )
    return p.parse_args(argv)


def raise_nofile(want=65536):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((max(want, soft), max(want, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def pin_generator():
    if (os.cpu_count() or 1) < 2:
        log("single CPU: generator and servers share it (figures are not comparable to 2-CPU runs)")
        return
    try:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    except OSError as e:
        log(f"could not pin the generator to CPU {GENERATOR_CPU}: {e}")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "xmppd-bench"


def make_target(server, sources):
    cache = xmpp.ScramCache(str(server.state_dir / "scram-cache.json"))
    return xmpp.Target(
        server.host,
        server.port,
        server.domain,
        server.muc_domain,
        sources=[f"127.0.0.{i}" for i in range(1, sources + 1)],
        cache=cache,
    )


async def prepare(server, selected, sizes, sources) -> str | None:
    """Create the accounts and rosters the selected scenarios need (once, kept)."""
    log(f"{server.name}: preparing accounts")
    target = None
    try:
        await server.start(muc=False)
        target = make_target(server, sources)
        ctx = scenarios.Ctx(server, target, sizes, log)
        markers = scenarios.Markers(server.state_dir)
        async with asyncio.timeout(PREPARE_TIMEOUT):
            pool = max([s.pool(sizes) for s in selected] + [0])
            if pool:
                await scenarios.ensure_pool(ctx, pool, markers)
            for s in selected:
                if s.setup:
                    await s.setup(ctx, markers)
        return None
    except servers.ServerStartError as e:
        return f"server did not start: {e}"
    except Exception as e:  # reported, the other server carries on
        return f"set-up failed: {e!r}"
    finally:
        if target is not None:
            target.cache.save()
        await server.stop()


async def run_once(server, scenario, sizes, sources) -> dict:
    target = None
    limit = scenario.timeout(sizes) if scenario.timeout else sizes.scenario_timeout
    try:
        await server.start(muc=scenario.name == "muc", smacks=scenario.smacks)
        target = make_target(server, sources)
        ctx = scenarios.Ctx(server, target, sizes, log)
        async with asyncio.timeout(limit):
            return await scenario.run(ctx)
    except servers.ServerStartError as e:
        return {"error": f"server did not start: {e}"}
    except TimeoutError:
        return {"error": f"timed out after {limit:.0f}s"}
    except Exception as e:
        return {"error": repr(e)[:500]}
    finally:
        if target is not None:
            target.cache.save()
        await server.stop()


async def amain(args) -> int:
    sizes = scenarios.QUICK if args.quick else scenarios.FULL
    names = args.scenario or list(scenarios.SCENARIOS)
    selected = [scenarios.SCENARIOS[n] for n in scenarios.SCENARIOS if n in names]
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()

    svs = [
        servers.Xmppd(state_dir, binary=args.xmppd) if name == "xmppd" else cls(state_dir)
        for name, cls in SERVERS.items()
        if not args.only or name in args.only
    ]
    failed = servers.ensure_tools(svs)
    if args.fresh:
        for s in svs:
            shutil.rmtree(s.state_dir, ignore_errors=True)

    versions = {s.name: s.version() for s in svs}
    for s in svs:
        if s.name not in failed:
            why = await prepare(s, selected, sizes, args.sources)
            if why:
                log(f"{s.name}: {why}")
                failed[s.name] = why

    summary, load, runs_of = {}, [], {}
    for sc in selected:
        runs = runs_of[sc.name] = args.runs or (1 if args.quick else sc.runs)
        per_run = {s.name: [] for s in svs}
        for run in range(1, runs + 1):
            for s in svs:
                if s.name in failed or (run > 1 and "error" in per_run[s.name][-1]):
                    # a server that failed keeps failing the same way: one error line
                    if run > 1:
                        continue
                    res = {"error": failed[s.name]}
                else:
                    log(f"{sc.name} / {s.name}: run {run} of {runs}")
                    load.append(os.getloadavg()[0])
                    res = await run_once(s, sc, sizes, args.sources)
                    load.append(os.getloadavg()[0])
                per_run[s.name].append(res)
                line = {"scenario": sc.name, "server": s.name, "run": run, **res}
                print(json.dumps(line), file=sys.stderr, flush=True)
        summary[sc.name] = {}
        for s in svs:
            med = report.median_of_runs(per_run[s.name])
            summary[sc.name][s.name] = med
            print(json.dumps({"scenario": sc.name, "server": s.name, **med}), flush=True)

    names_run = [s.name for s in svs]
    for s in svs:
        end = s.version()
        if end != versions[s.name]:  # the tree moved while we measured
            versions[s.name] += f" at the start, {end} at the end"
    print()
    print(report.table(summary, names_run))
    for e in report.errors(summary):
        print(e)

    path = args.results or (None if args.quick else str(Path(__file__).parent / "RESULTS.md"))
    if path:
        notes = []
        if "uncommitted" in versions.get("xmppd", ""):
            notes.append(
                "xmppd was measured from a working tree with uncommitted changes "
                "(a server under development): its figures are a snapshot, not a release's."
            )
        left_out = [report.SERVER_TITLES[n] for n in SERVERS if n not in names_run]
        if left_out:
            notes.append(f"Not run this time (`--only`): {', '.join(left_out)}; `make bench` runs all three.")
        cmd = "python -m bench " + " ".join(sys.argv[1:]) if sys.argv[1:] else "make bench"
        Path(path).write_text(
            report.results_markdown(summary, names_run, versions, runs_of, args.quick, cmd.strip(), notes, load)
            + archive.recorded(path)
        )
        log(f"table written to {path}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    standalone = [name for name in args.scenario or [] if name in STANDALONE]
    if standalone:  # no XMPP servers
        status = max(STANDALONE[name](args, "python -m bench " + " ".join(sys.argv[1:])) for name in standalone)
        args.scenario = [name for name in args.scenario if name not in STANDALONE]
        if not args.scenario:
            return status
    nofile = raise_nofile()
    need = max(scenarios.FULL.idle_steps) + 1000
    if nofile < need and not args.quick:
        log(f"open-files limit is {nofile}; idle_memory needs about {need}")
    pin_generator()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is not None:
        return uvloop.run(amain(args))
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
