-- xmppd SQLite schema, version 1.
--
-- Applied once by storage/sqlite/database.py inside one transaction, which then sets
-- PRAGMA user_version = 1. A later change goes in 002_<what>.sql and is applied on top;
-- never edit a file that has been released.
--
-- Owners, JIDs and ids are TEXT, stanzas and documents BLOB, configuration and room
-- state JSON TEXT. Every query of the stores is an index lookup or range scan on one of
-- the keys below.

CREATE TABLE accounts (
    jid         TEXT PRIMARY KEY,           -- bare JID, normalised by the caller
    domain      TEXT NOT NULL,
    secrets     TEXT NOT NULL,              -- JSON {hash name: {field: value}}, bytes in base64
    created     REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX accounts_by_domain ON accounts (domain, jid);

CREATE TABLE roster_versions (
    owner       TEXT PRIMARY KEY,
    version     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE roster_items (
    owner       TEXT NOT NULL,
    contact     TEXT NOT NULL,
    name        TEXT,
    subscription TEXT NOT NULL,
    ask         INTEGER NOT NULL,
    pending_in  INTEGER NOT NULL,
    approved    INTEGER NOT NULL,
    groups      TEXT NOT NULL,              -- JSON list of strings
    PRIMARY KEY (owner, contact)
) WITHOUT ROWID;

-- All named archives ("offline", "archive", "muc", ...) share one table.
-- Archive order is ("when", id): callers choose time-ordered ids, so this is the order
-- of insertion, and start/end filters and RSM paging are range scans of one index.
CREATE TABLE archive (
    store       TEXT NOT NULL,
    owner       TEXT NOT NULL,
    id          TEXT NOT NULL,
    "when"      REAL NOT NULL,
    with_       TEXT NOT NULL,
    payload     BLOB NOT NULL
);
CREATE UNIQUE INDEX archive_by_id ON archive (store, owner, id);
CREATE INDEX archive_by_time ON archive (store, owner, "when", id);
CREATE INDEX archive_by_with ON archive (store, owner, with_, "when", id);
CREATE INDEX archive_retention ON archive (store, "when");

CREATE TABLE keyvalue (
    store       TEXT NOT NULL,
    owner       TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    PRIMARY KEY (store, owner, key)
) WITHOUT ROWID;

CREATE TABLE rooms (
    jid         TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    state       TEXT NOT NULL               -- JSON object
) WITHOUT ROWID;
CREATE INDEX rooms_by_service ON rooms (service, jid);

CREATE TABLE pubsub_nodes (
    service     TEXT NOT NULL,
    node        TEXT NOT NULL,
    config      TEXT NOT NULL,              -- JSON object
    PRIMARY KEY (service, node)
) WITHOUT ROWID;

-- seq orders items by publication: a republished id gets a new seq (newest again).
CREATE TABLE pubsub_items (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    node        TEXT NOT NULL,
    id          TEXT NOT NULL,
    payload     BLOB NOT NULL,
    publisher   TEXT NOT NULL,
    "when"      REAL NOT NULL,
    UNIQUE (service, node, id)
);
CREATE INDEX pubsub_items_by_seq ON pubsub_items (service, node, seq);

CREATE TABLE uploads (
    id          TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    filename    TEXT NOT NULL,
    size        INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    created     REAL NOT NULL,
    expires     REAL NOT NULL,
    completed   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX uploads_by_owner ON uploads (owner, created, id);
CREATE INDEX uploads_by_expiry ON uploads (expires, id);
