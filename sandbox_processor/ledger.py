"""The sandbox processor's books: refunds and charges paid, and the failure it is told to fake.

One SQLite file (WAL, so readers never wait for the writer; busy_timeout, so concurrent writers
queue instead of failing; synchronous=NORMAL, so a payout survives the process being killed or
restarted, though not a power cut, without an fsync per request). Each server thread keeps a
connection of its own: a sqlite3 connection belongs to one thread.
"""
import hashlib
import json
import secrets
import sqlite3
import threading
import time

# The kinds of payout, each its own table of the same columns, and the prefix of its ids.
KINDS = {"refunds": "re_", "charges": "ch_"}
COLUMNS = ("id", "idempotency_key", "amount_cents", "currency", "tender", "payment_reference",
           "order_number", "request_hash", "created_at")
PAYOUT_TABLE = """
CREATE TABLE IF NOT EXISTS {kind} (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    amount_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    tender TEXT NOT NULL,
    payment_reference TEXT,
    order_number TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""
SCHEMA = "".join(PAYOUT_TABLE.format(kind=kind) for kind in KINDS) + """
CREATE TABLE IF NOT EXISTS behaviour (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    mode TEXT NOT NULL,
    times INTEGER NOT NULL,
    delay_s REAL NOT NULL
);
INSERT OR IGNORE INTO behaviour (id, mode, times, delay_s) VALUES (1, 'normal', 0, 3.0);
"""
MODES = ("normal", "decline", "error", "timeout_before_commit", "timeout_after_commit", "slow")


class KeyReused(Exception):
    """The idempotency key was used before with another request."""


class Ledger:
    def __init__(self, path):
        self.path, self.local = str(path), threading.local()
        connection = self.connect()
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)

    def connect(self):
        """This thread's connection. Autocommit: each statement is its own transaction, which
        is all this needs."""
        connection = getattr(self.local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            connection.execute("PRAGMA busy_timeout = 10000")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.row_factory = sqlite3.Row
            self.local.connection = connection
        return connection

    def pay(self, kind, key, request, request_hash):
        """Record a payout once per key: (object, created). The same key with another request
        raises KeyReused; nothing is paid twice, however many threads ask at once (the UNIQUE
        constraint decides)."""
        table = _table(kind)
        row = {"id": KINDS[kind] + secrets.token_hex(12), "idempotency_key": key,
               "request_hash": request_hash,
               "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **request}
        connection = self.connect()
        inserted = connection.execute(
            f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES "
            f"({', '.join(':' + c for c in COLUMNS)}) "
            "ON CONFLICT (idempotency_key) DO NOTHING", row).rowcount
        stored = connection.execute(f"SELECT * FROM {table} WHERE idempotency_key = ?",
                                    (key,)).fetchone()
        if stored["request_hash"] != request_hash:
            raise KeyReused(key)
        return dict(stored), bool(inserted)

    def find(self, kind, key):
        row = self.connect().execute(
            f"SELECT * FROM {_table(kind)} WHERE idempotency_key = ?", (key,)).fetchone()
        return dict(row) if row else None

    def rows(self, kind, key=None, prefix=None):
        query, params = f"SELECT * FROM {_table(kind)} WHERE 1 = 1", []
        if key is not None:
            query += " AND idempotency_key = ?"
            params.append(key)
        if prefix is not None:
            query += " AND substr(idempotency_key, 1, ?) = ?"
            params += [len(prefix), prefix]
        return [dict(r) for r in self.connect().execute(query + " ORDER BY created_at, id",
                                                        params)]

    # -- the failure to fake -------------------------------------------------------------------

    def behaviour(self):
        row = self.connect().execute("SELECT mode, times, delay_s FROM behaviour").fetchone()
        mode = row["mode"] if row["times"] != 0 else "normal"
        return {"mode": mode, "times": row["times"] if mode != "normal" else 0,
                "delay_s": row["delay_s"]}

    def set_behaviour(self, mode, times, delay_s):
        self.connect().execute("UPDATE behaviour SET mode = ?, times = ?, delay_s = ?",
                               ("normal", 0, delay_s) if mode == "normal"
                               else (mode, times, delay_s))

    def take_behaviour(self):
        """The faked failure this call gets, counted off in one statement (so two threads never
        both take the last one): (mode, delay_s); mode "normal" when none is left."""
        connection = self.connect()
        # Most calls find nothing to fake: a read answers them without taking the write lock.
        if self.behaviour()["mode"] == "normal":
            return "normal", 0.0
        # fetchall: the statement runs to its end, so the write transaction ends with it.
        rows = connection.execute(
            "UPDATE behaviour SET times = CASE WHEN times > 0 THEN times - 1 ELSE times END "
            "WHERE mode != 'normal' AND times != 0 RETURNING mode, delay_s").fetchall()
        return (rows[0]["mode"], rows[0]["delay_s"]) if rows else ("normal", 0.0)


def request_hash(request):
    """SHA-256 of the request's fields (not of its bytes: the same request sent with other
    whitespace or key order is the same request)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _table(kind):
    if kind not in KINDS:
        raise ValueError(kind)
    return kind
