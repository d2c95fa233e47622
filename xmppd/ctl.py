"""`xmppctl`: administration. Account and upload commands work on storage directly (the
server may run or not); status, sessions and kick talk to the running server's admin socket."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time

from xmppd import accounts, portable
from xmppd import config as config_module
from xmppd.config import ConfigError
from xmppd.portable import PortableError
from xmppd.protocol.jid import JID, InvalidJID
from xmppd.storage import StorageUnavailable, backend_module, open_backend
from xmppd.storage.backup import BackupError, ServerStores, backup, restore
from xmppd.storage.copy import census, copy
from xmppd.storage.media import open_media

LIVE_COMMANDS = ("status", "sessions", "kick")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="xmppctl", description="Administer an xmppd server.")
    parser.add_argument("--config", "-c", help="TOML config file (default: built-in defaults)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("adduser", "create an account"), ("passwd", "change an account's password")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("jid")
        sub.add_argument("--password", "-p", help="prompted when omitted")
    commands.add_parser("deluser", help="delete an account and its data").add_argument("jid")
    commands.add_parser("users", help="list accounts").add_argument("domain", nargs="?")
    commands.add_parser("status", help="state of the running server (in a cluster: sessions of every node)")
    commands.add_parser("sessions", help="sessions of the running server, of every node in a cluster")
    commands.add_parser(
        "kick", help="disconnect a user (bare JID) or one session (full JID), on whichever node it is"
    ).add_argument("jid")
    commands.add_parser("uploads", help="list a user's uploaded files (XEP-0363)").add_argument("jid")
    commands.add_parser("quota", help="a user's upload usage against the quota").add_argument("jid")
    commands.add_parser("delete-upload", help="delete an uploaded file").add_argument(
        "id", help="the file's id (from `uploads`) or its URL"
    )
    commands.add_parser("tokens", help="list a user's clients with FAST tokens (XEP-0484)").add_argument("jid")
    revoke = commands.add_parser("revoke-tokens", help="end a user's FAST tokens, of one client or all")
    revoke.add_argument("jid")
    revoke.add_argument("client", nargs="?", help="the client's id (from `tokens`); default: every client")
    storage = commands.add_parser("storage", help="storage schema; copying between backends").add_subparsers(
        dest="storage_command", required=True
    )
    storage.add_parser("init", help="create or upgrade the schema (Cassandra: keyspace and tables)").add_argument(
        "--backend", help="one backend kind (default: those of [storage])"
    )
    copy = storage.add_parser("copy", help="copy every store from one backend to another, then compare counts")
    copy.add_argument("--from", dest="source", required=True, help="backend kind, options from [storage.<kind>]")
    copy.add_argument("--to", dest="target", required=True, help="backend kind, options from [storage.<kind>]")
    commands.add_parser(
        "backup",
        help="back up every store and the media files into a new directory while the server runs: "
        "all on SQLite, one snapshot; PostgreSQL and Cassandra are read through the driver, consistent per row, "
        "not across (a point-in-time Cassandra backup is `nodetool snapshot`; see README, Backups)",
    ).add_argument("directory", help="a new or empty directory")
    restoring = commands.add_parser(
        "restore",
        help="restore a backup of any backend into the storage of this "
        "config (server stopped); refuses a target holding data, and a manifest "
        "that is damaged or of an unknown version",
    )
    restoring.add_argument("directory", help="a directory made by `xmppctl backup`")
    restoring.add_argument("--force", action="store_true", help="restore even into storage that holds data")
    for name, text in (
        (
            "export",
            "write the users' data (accounts with their SCRAM keys, rosters, vCards, "
            "offline messages, archives, private XML, PEP) to a new file",
        ),
        ("import", "read users' data from a file into the storage (server stopped); existing accounts are left alone"),
    ):
        commands.add_parser(name, help=text).add_argument(
            "--xep0227", metavar="FILE", required=True, help="XEP-0227 (portable import/export) XML"
        )
    args = parser.parse_args(argv)
    try:
        config = config_module.load(args.config)
        if args.command == "storage":
            return asyncio.run(storage_command(config, args))
        if args.command in ("export", "import"):
            return asyncio.run(portable_command(config, args))
        if args.command in ("backup", "restore"):
            return asyncio.run(backup_command(config, args))
        if args.command in LIVE_COMMANDS:
            return asyncio.run(live(config, args))
        return asyncio.run(offline(config, args))
    except ConfigError as exc:
        print(f"xmppctl: {exc}", file=sys.stderr)
        return 2
    except (BackupError, PortableError) as exc:
        print(f"xmppctl: {args.command}: {exc}", file=sys.stderr)
        return 1
    except StorageUnavailable as exc:
        print(f"xmppctl: storage: {exc}", file=sys.stderr)
        return 1


def _account(config, text: str) -> JID:
    try:
        jid = JID.parse(text)
    except InvalidJID:
        raise ConfigError(f"{text!r} is not a valid JID") from None
    if jid.local is None or jid.resource is not None:
        raise ConfigError(f"{text!r} is not an account's bare JID (user@domain)")
    if jid.domain not in [h.domain for h in config.hosts]:
        raise ConfigError(f"{jid.domain} is not a host of this server ({config.source})")
    return jid


def _password(args) -> str:
    if args.password is not None:
        password = args.password
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            raise ConfigError("the passwords differ")
    if not password:
        raise ConfigError("the password must not be empty")
    return password


async def offline(config, args) -> int:
    from xmppd.server import Server

    if config.storage.default == "memory":  # what it would do would vanish with it
        raise ConfigError(
            f"{args.command}: the memory storage of {config.source} lives in the server "
            "process only; make accounts in-band (XEP-0077) or with the XEP-0133 admin commands"
        )
    jid = _account(config, args.jid) if hasattr(args, "jid") else None
    password = _password(args) if args.command in ("adduser", "passwd") else None
    server = Server(config)
    await server.open()
    try:
        host = server.hosts[jid.domain] if jid else None
        if args.command == "adduser":
            if not await accounts.create_user(host, jid.local, password):
                print(f"xmppctl: {jid} exists already", file=sys.stderr)
                return 1
            print(f"created {jid}")
        elif args.command == "passwd":
            if not await accounts.set_password(host, jid.local, password):
                print(f"xmppctl: no account {jid}", file=sys.stderr)
                return 1
            print(f"password of {jid} changed")
        elif args.command == "deluser":
            if not await accounts.delete_user(host, jid.local):
                print(f"xmppctl: no account {jid}", file=sys.stderr)
                return 1
            print(f"deleted {jid}")
        elif args.command == "users":
            for domain in [args.domain] if args.domain else server.user_domains:
                for user in await server.storage.accounts.list(domain):
                    print(user)
        elif args.command == "uploads":
            upload = _upload_service(host)
            now = time.time()
            for item in await server.storage.uploads.list(str(jid)):
                state = "stored" if item.completed else "open slot" if upload.is_open(item, now) else "unused slot"
                print(
                    f"{item.id}\t{item.size}\t{state}\t{_utc(item.created)}\t{_utc(item.expires)}\t"
                    f"{upload.get_url(item)}"
                )
        elif args.command == "quota":
            upload = _upload_service(host)
            used, files = await upload.usage(str(jid))
            quota = upload.options.quota_per_user
            print(
                f"{jid}: {used} bytes in {files} files, quota "
                + (f"{quota} bytes ({100 * used / quota:.1f}% used)" if quota else "none")
            )
        elif args.command == "tokens":
            for client, slots in (await _fast(host).clients(str(jid))).items():
                for slot, token in slots.items():
                    if token:
                        print(
                            f"{client}\t{slot}\t{token['mechanism']}\t{_utc(token['issued'])}\t{_utc(token['expiry'])}"
                        )
        elif args.command == "revoke-tokens":
            if not await _fast(host).revoke(str(jid), args.client):
                print(f"xmppctl: no tokens of {jid}" + (f" for {args.client}" if args.client else ""), file=sys.stderr)
                return 1
            print(f"tokens of {jid} revoked" + (f" for {args.client}" if args.client else ""))
        elif args.command == "delete-upload":
            upload_id = args.id.rstrip("/").split("/")[-2] if "/" in args.id else args.id
            item = await server.storage.uploads.get(upload_id)
            host = server.hosts.get(item.owner.rpartition("@")[2]) if item else None
            if host is None:
                print(f"xmppctl: no upload {args.id}", file=sys.stderr)
                return 1
            await _upload_service(host).remove(item)
            print(f"deleted {item.id} of {item.owner}")
        return 0
    finally:
        await server.stop()


def _upload_service(host):
    """The XEP-0363 extension of `host`; a ConfigError when it is not enabled."""
    if "upload" not in host.extensions:
        raise ConfigError(f"the upload extension is not enabled on {host.domain}")
    return host.extensions["upload"]


def _fast(host):
    """The XEP-0484 extension of `host`; a ConfigError when it is not enabled."""
    if "fast" not in host.extensions:
        raise ConfigError(f"the fast extension is not enabled on {host.domain}")
    return host.extensions["fast"]


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _storage_backend(config, kind: str):
    """A backend of `kind` with the options of [storage.<kind>] (defaults without one)."""
    try:
        module = backend_module(kind)
    except ImportError as exc:
        raise ConfigError(f"unknown storage backend {kind!r} ({exc})") from None
    if not hasattr(module, "open_backend"):
        raise ConfigError(f"unknown storage backend {kind!r} (media stores are not copied)")
    options = config.backend_options.get(kind) or config_module.build(
        module.Options, {}, config_module.Where(config.source, f"storage.{kind}")
    )
    return open_backend(kind, options, str(config.data_dir))


async def storage_command(config, args) -> int:
    """`xmppctl storage init|copy`: on the backends themselves, never through a server."""
    if args.storage_command == "init":
        kinds = (
            [args.backend]
            if args.backend
            else sorted({config.storage.default, config.storage.archive or config.storage.default})
        )
        for kind in kinds:
            backend = _storage_backend(config, kind)
            init_schema = getattr(backend_module(kind), "init_schema", None)
            if init_schema is not None:  # a shared cluster: schema changes on demand
                applied = await init_schema(backend.options)
            else:  # an embedded database upgrades when opened
                await backend.start()
                await backend.close()
                applied = []
            print(f"{kind}: schema " + (f"versions {applied} applied" if applied else "up to date"))
        return 0
    if args.source == args.target:
        raise ConfigError("--from and --to name the same backend")
    domains = [host.domain for host in config.hosts]
    source, target = _storage_backend(config, args.source), _storage_backend(config, args.target)
    await source.start()
    try:
        await target.start()
        try:
            await copy(source, target, domains, progress=lambda step: print(f"copied {step}", file=sys.stderr))
            before, after = await census(source, domains), await census(target, domains)
        finally:
            await target.close()
    finally:
        await source.close()
    names = list(before | after)
    differ = [name for name in names if before.get(name, 0) != after.get(name, 0)]
    width = max(map(len, names))
    print(f"{'store':<{width}}  {args.source:>12}  {args.target:>12}")
    for name in names:
        print(
            f"{name:<{width}}  {before.get(name, 0):>12}  {after.get(name, 0):>12}"
            + ("  DIFFERS" if name in differ else "")
        )
    if differ:
        print(f"xmppctl: the counts differ in {', '.join(differ)}", file=sys.stderr)
        return 1
    return 0


async def backup_command(config, args) -> int:
    """`xmppctl backup|restore DIR`: the stores of [storage] (default and archive) and its media."""
    if config.storage.default == "memory":
        raise ConfigError(f"{args.command}: the memory storage of {config.source} lives in the server process only")
    default_kind = config.storage.default
    archive_kind = config.storage.archive or default_kind
    stores = _server_stores(config)
    media = open_media(config.storage.media, config.backend_options.get(config.storage.media), str(config.data_dir))
    say = lambda step: print(f"{args.command}: {step}", file=sys.stderr)  # noqa: E731
    try:
        if args.command == "backup":
            # All on SQLite: one snapshot of its file, without opening it as a backend.
            snapshot = stores.default.path if {default_kind, archive_kind} == {"sqlite"} else None
            if snapshot is None:
                await stores.start()
            try:
                source = {"default": default_kind, "archive": archive_kind, "media": config.storage.media}
                manifest = await backup(
                    stores,
                    snapshot,
                    media,
                    args.directory,
                    [host.domain for host in config.hosts],
                    source,
                    progress=say,
                )
            finally:
                if snapshot is None:
                    await stores.close()
            _counts_table(("store", "backup"), {name: (count,) for name, count in manifest["counts"].items()})
            print(f"media files: {manifest['media']['files']} ({manifest['media']['bytes']} bytes)")
            return 0
        await _refuse_running_server(config, args.command)
        await stores.start()
        try:
            before, after = await restore(
                stores,
                media,
                args.directory,
                force=args.force,
                progress=say,
                served=[host.domain for host in config.hosts],
            )
        finally:
            await stores.close()
    finally:
        await media.close()
    _counts_table(
        ("store", "backup", "restored"), {name: (before.get(name, 0), after.get(name, 0)) for name in before | after}
    )
    short = [name for name in before if after.get(name, 0) < before[name]]
    if short:
        print(f"xmppctl: restore: fewer in the target than in the backup: {', '.join(short)}", file=sys.stderr)
        return 1
    return 0


async def portable_command(config, args) -> int:
    """`xmppctl export|import --xep0227 FILE`: the users of this config's hosts."""
    if config.storage.default == "memory":
        raise ConfigError(f"{args.command}: the memory storage of {config.source} lives in the server process only")
    stores = _server_stores(config)
    domains = [host.domain for host in config.hosts]
    if args.command == "export" and os.path.exists(args.xep0227):
        raise PortableError(f"{args.xep0227} exists already")
    if args.command == "import":
        await _refuse_running_server(config, args.command)
    await stores.start()
    try:
        if args.command == "export":
            report = await portable.export(stores, domains, args.xep0227)
        else:
            report = await portable.import_file(stores, domains, args.xep0227)
    finally:
        await stores.close()
    for warning in report.warnings:
        print(f"xmppctl: {args.command}: {warning}", file=sys.stderr)
    _counts_table(
        ("what", "exported" if args.command == "export" else "imported"),
        {name: (count,) for name, count in report.counts.items()} or {"accounts": (0,)},
    )
    return 0


async def _refuse_running_server(config, command: str) -> None:
    """A running server caches rosters and counts queues: data written under it would
    not be seen, or be overwritten. Its admin socket answering tells that it runs."""
    try:
        _, writer = await asyncio.open_unix_connection(str(config.admin_socket))
    except OSError:
        return
    writer.close()
    raise ConfigError(f"{command}: the server of {config.source} is running ({config.admin_socket}); stop it first")


def _server_stores(config) -> ServerStores:
    """The stores of [storage]: archives from its archive backend, the rest from its default."""
    default_kind = config.storage.default
    archive_kind = config.storage.archive or default_kind
    default = _storage_backend(config, default_kind)
    return ServerStores(default, default if archive_kind == default_kind else _storage_backend(config, archive_kind))


def _counts_table(header: tuple[str, ...], rows: dict[str, tuple[int, ...]]) -> None:
    width = max(map(len, [header[0], *rows]))
    print(f"{header[0]:<{width}}" + "".join(f"  {title:>12}" for title in header[1:]))
    for name, counts in rows.items():
        print(f"{name:<{width}}" + "".join(f"  {count:>12}" for count in counts))


async def live(config, args) -> int:
    request = {"command": args.command}
    if args.command == "kick":
        request["jid"] = args.jid
    try:
        reader, writer = await asyncio.open_unix_connection(str(config.admin_socket))
    except OSError as exc:
        print(f"xmppctl: the server is not running ({config.admin_socket}: {exc.strerror})", file=sys.stderr)
        return 1
    writer.write(json.dumps(request).encode() + b"\n")
    answer = json.loads(await reader.readline())
    writer.close()
    if "error" in answer:
        print(f"xmppctl: {answer['error']}", file=sys.stderr)
        return 1
    if args.command == "sessions":
        for entry in answer["sessions"]:
            print(
                f"{entry['jid']}\t{entry['peer']}\t{'available' if entry['available'] else 'unavailable'}"
                f"\t{entry['priority']}\t{entry['node']}"
            )
    elif args.command == "kick":
        print("\n".join(answer["kicked"]) or "no such session")
    else:
        print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
