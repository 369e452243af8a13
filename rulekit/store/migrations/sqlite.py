"""The SQLite schema, as numbered steps. Never edit a released step: add the next one.

Conventions (PostgreSQL mirrors them with native types): times are ISO-8601 UTC text with
microseconds (``2024-05-01T12:00:00.000000+00:00``), which sorts as time does; JSON is text;
ids handed to users are ``INTEGER PRIMARY KEY AUTOINCREMENT``, so they are never reused.
"""

from __future__ import annotations

from rulekit.store.migrations import Migration, check_sequence

INITIAL = """
-- conversation state -----------------------------------------------------------------------

CREATE TABLE conversations (
    channel     TEXT NOT NULL,
    key         TEXT NOT NULL,             -- the provider's key, e.g. Chatra's client id
    id          TEXT,                      -- rulekit's conversation id
    status      TEXT,                      -- open / closed
    assignee    TEXT,                      -- lower-cased agent email
    data        TEXT NOT NULL,             -- the Conversation as JSON
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (channel, key)
);
CREATE INDEX conversations_by_id ON conversations (id);
CREATE INDEX conversations_open_by_assignee ON conversations (assignee, channel)
    WHERE status = 'open' AND assignee IS NOT NULL;

CREATE TABLE clients (
    channel     TEXT NOT NULL,
    id          TEXT NOT NULL,
    data        TEXT NOT NULL,             -- the Client as JSON
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (channel, id)
);

CREATE TABLE seen_messages (
    channel     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    seen_at     TEXT NOT NULL,
    PRIMARY KEY (channel, message_id)
) WITHOUT ROWID;

CREATE TABLE cooldowns (
    rule             TEXT NOT NULL,
    conversation_id  TEXT NOT NULL,
    until            TEXT NOT NULL,
    PRIMARY KEY (rule, conversation_id)
) WITHOUT ROWID;

CREATE TABLE positions (
    key    TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
);

-- the daemon's journal -----------------------------------------------------------------------

CREATE TABLE inbox (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    channel        TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    body           BLOB NOT NULL,
    delivery_key   TEXT,                   -- redelivery detection; NULL: never a duplicate
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'done', 'failed')),
    error          TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    claimed_by     TEXT,
    claimed_until  TEXT,
    UNIQUE (channel, delivery_key)
);
CREATE INDEX inbox_pending ON inbox (id) WHERE status = 'pending';

CREATE TABLE events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,   -- processing order
    event_id         TEXT NOT NULL UNIQUE,
    inbox_id         INTEGER REFERENCES inbox (id) ON DELETE SET NULL,
    channel          TEXT NOT NULL,
    event            TEXT NOT NULL,
    conversation_id  TEXT,
    occurred_at      TEXT NOT NULL,
    data             TEXT NOT NULL,        -- Event.public() as JSON
    trace            TEXT NOT NULL,        -- the engine's trace as JSON
    processed_at     TEXT NOT NULL
);
CREATE INDEX events_by_inbox ON events (inbox_id);
CREATE INDEX events_by_conversation ON events (conversation_id);
CREATE INDEX events_by_processed_at ON events (processed_at);

CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         TEXT NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    rule             TEXT NOT NULL,
    action           TEXT NOT NULL,
    params           TEXT NOT NULL,        -- rendered parameters as JSON
    destination      TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'done', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    result           TEXT,                 -- JSON
    claimed_by       TEXT,
    claimed_until    TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_by_event ON outbox (event_id);
CREATE INDEX outbox_by_status ON outbox (status, rule);

CREATE TABLE attempts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    at       TEXT NOT NULL,
    outcome  TEXT NOT NULL CHECK (outcome IN ('done', 'retry', 'dead')),
    error    TEXT,
    result   TEXT                          -- JSON
);
CREATE INDEX attempts_by_job ON attempts (job_id);
"""

CONVERSATION_ORDER = """
-- The conversation an inbox item belongs to, when ingest knows it: only the oldest pending
-- item of a conversation is claimable, so its events are processed in order.
ALTER TABLE inbox ADD COLUMN conversation_key TEXT;
CREATE INDEX inbox_pending_by_conversation ON inbox (channel, conversation_key, id)
    WHERE status = 'pending' AND conversation_key IS NOT NULL;
"""

COOLDOWNS_BY_CONVERSATION = """
-- The daemon reads a conversation's cooldown marks at once before evaluating its event in the
-- evaluation worker (outside the store's transaction).
CREATE INDEX cooldowns_by_conversation ON cooldowns (conversation_id);
"""

JOB_LANES = """
-- Each job's lane (a paced destination, or a conversation): a lane's jobs are claimed by one
-- daemon at a time and executed oldest first. Jobs from before keep their destination as lane.
-- A call's start is recorded before the request leaves, so that after a crash only calls
-- that were under way are made again.
ALTER TABLE outbox ADD COLUMN lane TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN call_started_at TEXT;
ALTER TABLE outbox ADD COLUMN call_started_by TEXT;
UPDATE outbox SET lane = destination;
CREATE INDEX outbox_pending_by_lane ON outbox (lane, id) WHERE status = 'pending';
"""

CONVERSATION_ACTIVITY = """
-- When each conversation last had an event, and its client: the console lists conversations
-- newest activity first (and searches their clients) by this index, not by scanning events.
ALTER TABLE conversations ADD COLUMN active_at TEXT NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN client_id TEXT;
UPDATE conversations SET active_at = updated_at;
CREATE INDEX conversations_by_activity ON conversations (active_at, channel, key);
"""

LEASES = """
-- Leases: which daemon does a thing only one should do at a time (e.g. poll a channel's
-- updates), until when. A holder renews its lease; when it stops, the lease runs out.
CREATE TABLE leases (
    name   TEXT PRIMARY KEY,
    owner  TEXT NOT NULL,
    until  TEXT NOT NULL
);
"""

TIMERS = """
-- Timers of timed rules (`after:`): set in the transaction that records the triggering event,
-- fired once when due. One pending timer per rule and conversation; the earliest due time
-- and a conversation's cancellation are index lookups.
CREATE TABLE timers (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    rule              TEXT NOT NULL,
    conversation_id   TEXT NOT NULL,
    channel           TEXT NOT NULL,
    due               TEXT NOT NULL,
    trigger_event_id  TEXT NOT NULL,       -- read back from events when due
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'fired', 'unless', 'dropped', 'cancelled',
                                        'gone', 'error')),
    set_at            TEXT NOT NULL,
    finished_at       TEXT,
    reason            TEXT,
    by_event          TEXT,                -- the cancelling event, or the fired one
    claimed_by        TEXT,
    claimed_until     TEXT
);
CREATE UNIQUE INDEX timers_pending ON timers (rule, conversation_id) WHERE status = 'pending';
CREATE INDEX timers_due ON timers (due) WHERE status = 'pending';
CREATE INDEX timers_by_trigger ON timers (trigger_event_id);
CREATE INDEX timers_by_event ON timers (by_event);
CREATE INDEX timers_by_conversation ON timers (conversation_id);
"""

TEAM_AND_STATS = """
-- Presence: one row per agent who ever signed in to the console (never deleted: whether anyone
-- ever did decides whether `assign` looks at presence by default). Their own choice (online /
-- away), and until when a console stream of theirs counts as connected (streams renew it).
CREATE TABLE presence (
    email            TEXT PRIMARY KEY,      -- lower-cased
    status           TEXT NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'away')),
    connected_until  TEXT,
    first_seen_at    TEXT NOT NULL
);

-- Which rules matched each recorded event (`rulekit stats`): per rule and time by an index,
-- not by reading every event's trace. Deleted with their event by retention.
CREATE TABLE rule_matches (
    rule        TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    matched_at  TEXT NOT NULL,
    PRIMARY KEY (rule, event_id)
);
CREATE INDEX rule_matches_by_time ON rule_matches (matched_at);
CREATE INDEX rule_matches_by_event ON rule_matches (event_id);
"""

PURGE_BY_TIME = """
-- Retention finds old finished inbox items, and old bodies not yet emptied, by time: a purge
-- with little to do reads little, however long the history.
CREATE INDEX inbox_finished_by_time ON inbox (received_at) WHERE status <> 'pending';
CREATE INDEX inbox_payloads_by_time ON inbox (received_at)
    WHERE status <> 'pending' AND length(body) > 0;
"""

REQUEST_KEYS = """
-- The Idempotency-Key of each console write (one row per agent and key; the newest 2,000 and
-- none older than a day are kept): what the request was, and the answer a retry gets again.
-- In the store, so a retry reaching another daemon, or the same one after a restart, is known.
CREATE TABLE request_keys (
    id               INTEGER PRIMARY KEY,   -- order of first use: the oldest go first
    who              TEXT NOT NULL,         -- the agent's lower-cased email, or 'admin'
    key              TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,         -- a digest of the method, endpoint, conversation, body
    conversation_id  TEXT NOT NULL,
    used_at          TEXT NOT NULL,
    status           INTEGER,               -- the answer kept for retries, if any
    answer           BLOB,
    UNIQUE (who, key)
);
CREATE INDEX request_keys_by_time ON request_keys (used_at);
CREATE INDEX request_keys_by_conversation ON request_keys (conversation_id);
"""

TIMERS_BY_FINISH = """
-- Retention deletes finished timers (their reasons may quote what a rule read of the client)
-- after retention.events, found by when they finished.
CREATE INDEX timers_finished_by_time ON timers (finished_at) WHERE status <> 'pending';
"""

OWN_EVENTS = """
-- How many events rulekit's own actions caused under an event from outside, all chains
-- together: past rulekit.event.MAX_OWN_EVENTS no rule reacts to the next.
ALTER TABLE events ADD COLUMN own_events INTEGER NOT NULL DEFAULT 0;
"""

CONSOLE_SESSIONS = """
-- The console's sessions, shared by every daemon on the store (a browser signed in on one is
-- signed in on all, and after a restart). session_hash is the SHA-256 of the id the browser
-- holds, never the id; credential is the SHA-256 of the token signed in with (the hash the
-- config keeps). Times are seconds since the epoch. Nothing here names a person.
CREATE TABLE console_sessions (
    id            INTEGER PRIMARY KEY,  -- order of sign-in: the oldest go first
    session_hash  TEXT NOT NULL UNIQUE,
    credential    TEXT NOT NULL,
    opened_at     REAL NOT NULL,
    idle_until    REAL NOT NULL          -- it ends then unless used again
);
CREATE INDEX console_sessions_by_credential ON console_sessions (credential, id);
CREATE INDEX console_sessions_by_expiry ON console_sessions (idle_until);

-- Failed console sign-ins per client address (a keyed hash of it, never the address), and
-- the one budget of failures of all addresses together (tokens NULL: full).
CREATE TABLE console_sign_ins (
    address      TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    last_failed  REAL NOT NULL,
    wait_until   REAL NOT NULL
);
CREATE INDEX console_sign_ins_by_time ON console_sign_ins (last_failed);
CREATE TABLE console_sign_in_budget (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    tokens     REAL,
    filled_at  REAL
);
INSERT INTO console_sign_in_budget (id, tokens, filled_at) VALUES (1, NULL, NULL);
"""

UNCLOSED_BY_ASSIGNEE = """
-- A conversation without a status (a generic webhook channel's) is open until it is closed:
-- max_open and team.open_count() count every conversation not closed.
DROP INDEX conversations_open_by_assignee;
CREATE INDEX conversations_unclosed_by_assignee ON conversations (assignee, channel)
    WHERE assignee IS NOT NULL AND (status IS NULL OR status <> 'closed');
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", INITIAL),
    Migration(2, "conversation_order", CONVERSATION_ORDER),
    Migration(3, "cooldowns_by_conversation", COOLDOWNS_BY_CONVERSATION),
    Migration(4, "job_lanes", JOB_LANES),
    Migration(5, "conversation_activity", CONVERSATION_ACTIVITY),
    Migration(6, "leases", LEASES),
    Migration(7, "timers", TIMERS),
    Migration(8, "team_and_stats", TEAM_AND_STATS),
    Migration(9, "purge_by_time", PURGE_BY_TIME),
    Migration(10, "request_keys", REQUEST_KEYS),
    Migration(11, "timers_by_finish", TIMERS_BY_FINISH),
    Migration(12, "own_events", OWN_EVENTS),
    Migration(13, "console_sessions", CONSOLE_SESSIONS),
    Migration(14, "unclosed_by_assignee", UNCLOSED_BY_ASSIGNEE),
)
check_sequence(MIGRATIONS)
