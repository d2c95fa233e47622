-- xmppd PostgreSQL schema, version 1.
--
-- Applied by storage/postgresql/schema.py in one transaction, under an advisory lock
-- (several xmppd nodes may start at once on one database), then recorded in
-- xmppd_schema. A later change goes in 002_<what>.sql and is applied on top; never
-- edit a file that has been released.
--
-- The tables are those of the SQLite backend: owners, JIDs and ids are text, stanzas
-- and documents bytea, configuration and room state JSON text. Text that is sorted or
-- compared in ranges is COLLATE "C": byte order, which for UTF-8 is the code point
-- order that the other backends (and Python) sort by, whatever the database's locale.
-- Every counter (roster versions, the order of pubsub items) is kept here, never in an
-- xmppd process: two nodes writing at once get distinct, increasing values.

CREATE TABLE accounts (
    jid         text COLLATE "C" PRIMARY KEY,   -- bare JID, normalised by the caller
    domain      text COLLATE "C" NOT NULL,
    secrets     text NOT NULL,                  -- storage/scram_secrets.py
    created     double precision NOT NULL
);
CREATE INDEX accounts_by_domain ON accounts (domain, jid);

-- A write to a roster changes its item(s), then moves the version with
-- INSERT ... ON CONFLICT DO UPDATE SET version = version + 1, in one transaction: the
-- row lock orders concurrent writers of one roster, whichever node they run on.
CREATE TABLE roster_versions (
    owner       text COLLATE "C" PRIMARY KEY,
    version     bigint NOT NULL
);

CREATE TABLE roster_items (
    owner       text COLLATE "C" NOT NULL,
    contact     text COLLATE "C" NOT NULL,
    name        text,
    subscription text NOT NULL,
    ask         boolean NOT NULL,
    pending_in  boolean NOT NULL,
    approved    boolean NOT NULL,
    groups      text[] NOT NULL,
    PRIMARY KEY (owner, contact)
);

-- All named archives ("offline", "archive", "muc", ...) share one table. Archive order
-- is ("when", id); ids are the callers' (time-ordered, unique across nodes).
CREATE TABLE archive (
    store       text COLLATE "C" NOT NULL,
    owner       text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    "when"      double precision NOT NULL,
    with_       text COLLATE "C" NOT NULL,
    payload     bytea NOT NULL,
    PRIMARY KEY (store, owner, id)
);
CREATE INDEX archive_by_time ON archive (store, owner, "when", id);
CREATE INDEX archive_by_with ON archive (store, owner, with_, "when", id);
CREATE INDEX archive_retention ON archive (store, "when");

CREATE TABLE keyvalue (
    store       text COLLATE "C" NOT NULL,
    owner       text COLLATE "C" NOT NULL,
    key         text COLLATE "C" NOT NULL,
    value       bytea NOT NULL,
    PRIMARY KEY (store, owner, key)
);

CREATE TABLE rooms (
    jid         text COLLATE "C" PRIMARY KEY,
    service     text COLLATE "C" NOT NULL,
    state       text NOT NULL                   -- JSON object
);
CREATE INDEX rooms_by_service ON rooms (service, jid);

CREATE TABLE pubsub_nodes (
    service     text COLLATE "C" NOT NULL,
    node        text COLLATE "C" NOT NULL,
    config      text NOT NULL,                  -- JSON object
    PRIMARY KEY (service, node)
);

-- seq orders items by publication: a republished id takes a new seq (newest again).
CREATE SEQUENCE pubsub_item_seq;
CREATE TABLE pubsub_items (
    service     text COLLATE "C" NOT NULL,
    node        text COLLATE "C" NOT NULL,
    id          text COLLATE "C" NOT NULL,
    seq         bigint NOT NULL DEFAULT nextval('pubsub_item_seq'),
    payload     bytea NOT NULL,
    publisher   text NOT NULL,
    "when"      double precision NOT NULL,
    PRIMARY KEY (service, node, id)
);
CREATE INDEX pubsub_items_by_seq ON pubsub_items (service, node, seq);

CREATE TABLE uploads (
    id          text COLLATE "C" PRIMARY KEY,
    owner       text COLLATE "C" NOT NULL,
    filename    text NOT NULL,
    size        bigint NOT NULL,
    content_type text NOT NULL,
    created     double precision NOT NULL,
    expires     double precision NOT NULL,
    completed   boolean NOT NULL
);
CREATE INDEX uploads_by_owner ON uploads (owner, created, id);
CREATE INDEX uploads_by_expiry ON uploads (expires, id);
