"""`xmppd`: run the server, or check a config file."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from pathlib import Path

from xmppd import config as config_module
from xmppd import logs
from xmppd.config import ConfigError
from xmppd.storage import StorageUnavailable

log = logging.getLogger("xmppd")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="xmppd", description="An XMPP server.")
    parser.add_argument("--config", "-c", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    args = parser.parse_args(argv)
    try:
        config = config_module.load(args.config)
        if args.check_config:
            from xmppd.server import check_extensions

            check_extensions(config)
            print(f"{config.source}: OK")
            return 0
    except ConfigError as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.server.log_level, config.server.log_format)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        return asyncio.run(serve(config, args.config))
    except ConfigError as exc:
        print(f"xmppd: {exc}", file=sys.stderr)
        return 2
    except StorageUnavailable as exc:
        print(f"xmppd: storage: {exc}", file=sys.stderr)
        return 1


async def serve(config, config_path) -> int:
    from xmppd.server import Server

    server = Server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        await server.stop()
        raise ConfigError(f"cannot listen: {exc}") from None
    # What start-up loaded lives as long as the process: out of the collector's sight,
    # a full collection stays short, and so does the delay it adds to a message.
    gc.freeze()
    beside = Path(sys.argv[0]).with_name("xmppctl")  # the one installed with this xmppd
    ctl = (str(beside) if beside.exists() else "xmppctl") + (f" --config {config_path}" if config_path else "")
    print(f"xmppd serving {', '.join(server.user_domains)}; listening on {', '.join(server.listening())}", flush=True)
    print(f"data in {config.data_dir}; add a user with: {ctl} adduser user@{server.user_domains[0]}", flush=True)
    await stop.wait()
    log.info("event=shutting-down")
    await server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
