"""The PostgreSQL schema, as numbered steps. Never edit a released step: add the next one.

Steps 1 and 2 mirror the SQLite schema (same versions, same tables and columns) with native
types: ``timestamptz`` times, ``json`` documents (``json``, not ``jsonb``, keeps the key order of
traces as written), ``bytea`` bodies, and identity ids from sequences, so they are never reused.
Step 3 (shared pacing) exists only here: a SQLite store has a single daemon. Step 5 (job
lanes and call starts) is SQLite's step 4, step 6 (conversation activity) its step 5.
"""

from __future__ import annotations

from rulekit.store.migrations import Migration, check_sequence

INITIAL = """
-- conversation state -----------------------------------------------------------------------

CREATE TABLE conversations (
    channel     text NOT NULL,
    key         text NOT NULL,             -- the provider's key, e.g. Chatra's client id
    id          text,                      -- rulekit's conversation id
    status      text,                      -- open / closed
    assignee    text,                      -- lower-cased agent email
    data        text NOT NULL,             -- the Conversation as JSON (pydantic reads it back)
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (channel, key)
);
CREATE INDEX conversations_by_id ON conversations (id);
CREATE INDEX conversations_open_by_assignee ON conversations (assignee, channel)
    WHERE status = 'open' AND assignee IS NOT NULL;

CREATE TABLE clients (
    channel     text NOT NULL,
    id          text NOT NULL,
    data        text NOT NULL,             -- the Client as JSON
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (channel, id)
);

CREATE TABLE seen_messages (
    channel     text NOT NULL,
    message_id  text NOT NULL,
    seen_at     timestamptz NOT NULL,
    PRIMARY KEY (channel, message_id)
);

CREATE TABLE cooldowns (
    rule             text NOT NULL,
    conversation_id  text NOT NULL,
    until            timestamptz NOT NULL,
    PRIMARY KEY (rule, conversation_id)
);

CREATE TABLE positions (
    key    text PRIMARY KEY,
    value  bigint NOT NULL
);

-- the daemon's journal -----------------------------------------------------------------------

CREATE TABLE inbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel        text NOT NULL,
    received_at    timestamptz NOT NULL,
    body           bytea NOT NULL,
    delivery_key   text,                   -- redelivery detection; NULL: never a duplicate
    status         text NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'done', 'failed')),
    error          text,
    attempts       integer NOT NULL DEFAULT 0,
    claimed_by     text,
    claimed_until  timestamptz,
    UNIQUE (channel, delivery_key)
);
CREATE INDEX inbox_pending ON inbox (id) WHERE status = 'pending';

CREATE TABLE events (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- processing order
    event_id         text NOT NULL UNIQUE,
    inbox_id         bigint REFERENCES inbox (id) ON DELETE SET NULL,
    channel          text NOT NULL,
    event            text NOT NULL,
    conversation_id  text,
    occurred_at      timestamptz NOT NULL,
    data             json NOT NULL,        -- Event.public()
    trace            json NOT NULL,        -- the engine's trace
    processed_at     timestamptz NOT NULL
);
CREATE INDEX events_by_inbox ON events (inbox_id);
CREATE INDEX events_by_conversation ON events (conversation_id);
CREATE INDEX events_by_processed_at ON events (processed_at);

CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         text NOT NULL REFERENCES events (event_id) ON DELETE CASCADE,
    rule             text NOT NULL,
    action           text NOT NULL,
    params           json NOT NULL,        -- rendered parameters
    destination      text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'done', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_error       text,
    result           json,
    claimed_by       text,
    claimed_until    timestamptz
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX outbox_by_event ON outbox (event_id);
CREATE INDEX outbox_by_status ON outbox (status, rule);

CREATE TABLE attempts (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id   bigint NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    at       timestamptz NOT NULL,
    outcome  text NOT NULL CHECK (outcome IN ('done', 'retry', 'dead')),
    error    text,
    result   json
);
CREATE INDEX attempts_by_job ON attempts (job_id);
"""

CONVERSATION_ORDER = """
-- The conversation an inbox item belongs to, when ingest knows it: only the oldest pending
-- item of a conversation is claimable, so its events are processed in order by any daemon.
ALTER TABLE inbox ADD COLUMN conversation_key text;
CREATE INDEX inbox_pending_by_conversation ON inbox (channel, conversation_key, id)
    WHERE status = 'pending' AND conversation_key IS NOT NULL;
"""

SHARED_PACING = """
-- The next free send slot of each paced destination, agreed by every daemon (PostgreSQL only:
-- a SQLite store has one daemon, whose in-process pacer is enough).
CREATE TABLE pacing (
    key      text PRIMARY KEY,
    next_at  timestamptz NOT NULL
);
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
ALTER TABLE outbox ADD COLUMN lane text NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN call_started_at timestamptz;
ALTER TABLE outbox ADD COLUMN call_started_by text;
UPDATE outbox SET lane = destination;
CREATE INDEX outbox_pending_by_lane ON outbox (lane, id) WHERE status = 'pending';
"""

CONVERSATION_ACTIVITY = """
-- When each conversation last had an event, and its client: the console lists conversations
-- newest activity first (and searches their clients) by this index, not by scanning events.
ALTER TABLE conversations ADD COLUMN active_at timestamptz;
ALTER TABLE conversations ADD COLUMN client_id text;
UPDATE conversations SET active_at = updated_at;
ALTER TABLE conversations ALTER COLUMN active_at SET NOT NULL;
CREATE INDEX conversations_by_activity ON conversations (active_at, channel, key);
"""

LEASES = """
-- Leases: which daemon does a thing only one should do at a time (e.g. poll a channel's
-- updates), until when. A holder renews its lease; when it stops, the lease runs out.
CREATE TABLE leases (
    name   text PRIMARY KEY,
    owner  text NOT NULL,
    until  timestamptz NOT NULL
);
"""

TIMERS = """
-- Timers of timed rules (`after:`): set in the transaction that records the triggering event,
-- fired once when due. One pending timer per rule and conversation; the earliest due time
-- and a conversation's cancellation are index lookups.
CREATE TABLE timers (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule              text NOT NULL,
    conversation_id   text NOT NULL,
    channel           text NOT NULL,
    due               timestamptz NOT NULL,
    trigger_event_id  text NOT NULL,       -- read back from events when due
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'fired', 'unless', 'dropped', 'cancelled',
                                        'gone', 'error')),
    set_at            timestamptz NOT NULL,
    finished_at       timestamptz,
    reason            text,
    by_event          text,                -- the cancelling event, or the fired one
    claimed_by        text,
    claimed_until     timestamptz
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
    email            text PRIMARY KEY,      -- lower-cased
    status           text NOT NULL DEFAULT 'online' CHECK (status IN ('online', 'away')),
    connected_until  timestamptz,
    first_seen_at    timestamptz NOT NULL
);

-- Which rules matched each recorded event (`rulekit stats`): per rule and time by an index,
-- not by reading every event's trace. Deleted with their event by retention.
CREATE TABLE rule_matches (
    rule        text NOT NULL,
    event_id    text NOT NULL,
    matched_at  timestamptz NOT NULL,
    PRIMARY KEY (rule, event_id)
);
CREATE INDEX rule_matches_by_time ON rule_matches (matched_at);
CREATE INDEX rule_matches_by_event ON rule_matches (event_id);
"""

WORK_NOTICES = """
-- New work is announced on a channel of the schema (see PostgresStore.listen): a daemon sees
-- what another one ingested, enqueued or set at once, instead of at its next poll. A statement
-- announces only rows that anyone may claim now (pending, not held), so claims stay quiet;
-- the notices go out at commit, one per queue and transaction.
CREATE FUNCTION rulekit_announce_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM changed WHERE status = 'pending' AND claimed_by IS NULL) THEN
        PERFORM pg_notify('rulekit_' || left(md5(current_schema()), 16), TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER inbox_added AFTER INSERT ON inbox REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rulekit_announce_work('inbox');
CREATE TRIGGER inbox_freed AFTER UPDATE ON inbox REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rulekit_announce_work('inbox');
CREATE TRIGGER outbox_added AFTER INSERT ON outbox REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rulekit_announce_work('outbox');
CREATE TRIGGER outbox_freed AFTER UPDATE ON outbox REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rulekit_announce_work('outbox');
CREATE TRIGGER timers_added AFTER INSERT ON timers REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rulekit_announce_work('timers');
CREATE TRIGGER timers_freed AFTER UPDATE ON timers REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION rulekit_announce_work('timers');
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
    -- id: the order of first use (the oldest go first)
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    who              text NOT NULL,         -- the agent's lower-cased email, or 'admin'
    key              text NOT NULL,
    fingerprint      text NOT NULL,         -- a digest of the method, endpoint, conversation, body
    conversation_id  text NOT NULL,
    used_at          timestamptz NOT NULL,
    status           integer,               -- the answer kept for retries, if any
    answer           bytea,
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
ALTER TABLE events ADD COLUMN own_events integer NOT NULL DEFAULT 0;
"""

CONSOLE_SESSIONS = """
-- The console's sessions, shared by every daemon on the store (a browser signed in on one is
-- signed in on all, and after a restart). session_hash is the SHA-256 of the id the browser
-- holds, never the id; credential is the SHA-256 of the token signed in with (the hash the
-- config keeps). Times are seconds since the epoch. Nothing here names a person.
CREATE TABLE console_sessions (
    -- id: the order of sign-in (the oldest go first)
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_hash  text NOT NULL UNIQUE,
    credential    text NOT NULL,
    opened_at     double precision NOT NULL,
    idle_until    double precision NOT NULL          -- it ends then unless used again
);
CREATE INDEX console_sessions_by_credential ON console_sessions (credential, id);
CREATE INDEX console_sessions_by_expiry ON console_sessions (idle_until);

-- Failed console sign-ins per client address (a keyed hash of it, never the address), and
-- the one budget of failures of all addresses together (tokens NULL: full).
CREATE TABLE console_sign_ins (
    address      text PRIMARY KEY,
    failures     integer NOT NULL,
    last_failed  double precision NOT NULL,
    wait_until   double precision NOT NULL
);
CREATE INDEX console_sign_ins_by_time ON console_sign_ins (last_failed);
CREATE TABLE console_sign_in_budget (
    id         integer PRIMARY KEY CHECK (id = 1),
    tokens     double precision,
    filled_at  double precision
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

EVENTS_BY_CONVERSATION_ORDER = """
-- A page of a conversation's events (the console's view, its older and newer pages) is read
-- in processing order: by (conversation_id, id) it is read in order, where an index of the
-- conversation alone sorted every event of it for each page. (SQLite's index of the
-- conversation holds the rowid, which is id, in order already.)
CREATE INDEX events_by_conversation_in_order ON events (conversation_id, id);
DROP INDEX events_by_conversation;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial", INITIAL),
    Migration(2, "conversation_order", CONVERSATION_ORDER),
    Migration(3, "shared_pacing", SHARED_PACING),
    Migration(4, "cooldowns_by_conversation", COOLDOWNS_BY_CONVERSATION),
    Migration(5, "job_lanes", JOB_LANES),
    Migration(6, "conversation_activity", CONVERSATION_ACTIVITY),
    Migration(7, "leases", LEASES),
    Migration(8, "timers", TIMERS),
    Migration(9, "team_and_stats", TEAM_AND_STATS),
    Migration(10, "work_notices", WORK_NOTICES),
    Migration(11, "purge_by_time", PURGE_BY_TIME),
    Migration(12, "request_keys", REQUEST_KEYS),
    Migration(13, "timers_by_finish", TIMERS_BY_FINISH),
    Migration(14, "own_events", OWN_EVENTS),
    Migration(15, "console_sessions", CONSOLE_SESSIONS),
    Migration(16, "unclosed_by_assignee", UNCLOSED_BY_ASSIGNEE),
    Migration(17, "events_by_conversation_in_order", EVENTS_BY_CONVERSATION_ORDER),
)
check_sequence(MIGRATIONS)
