-- The prompt library. Queries elsewhere are portable SQL ($N parameters, ON CONFLICT,
-- RETURNING); only this DDL is SQLite's own (a Postgres store gets its own migrations).

CREATE TABLE prompts (
    name            TEXT PRIMARY KEY,
    review_required INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    created_by      TEXT NOT NULL
);

-- Immutable: a row is never updated except for its review state.
CREATE TABLE versions (
    prompt       TEXT NOT NULL REFERENCES prompts(name),
    hash         TEXT NOT NULL,             -- sha256 of the prompt's behaviour (see content.rs)
    seq          INTEGER NOT NULL,          -- v1, v2, ... per prompt
    content      TEXT NOT NULL,             -- the prompt file (TOML)
    parents      TEXT NOT NULL,             -- JSON array of parent hashes
    origin       TEXT NOT NULL,             -- human | import | generate | optimize | translate
    run_id       TEXT,
    author       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    target_model TEXT,
    constraints  TEXT NOT NULL,             -- JSON array of protected sentences
    checks       TEXT,                      -- JSON: the constraint check results, when made
    message      TEXT,
    review       TEXT NOT NULL,             -- none | proposed | approved | rejected
    PRIMARY KEY (prompt, hash),
    UNIQUE (prompt, seq)
);
CREATE INDEX versions_hash ON versions(hash);

CREATE TABLE labels (
    prompt   TEXT NOT NULL REFERENCES prompts(name),
    label    TEXT NOT NULL,
    hash     TEXT NOT NULL,
    moved_at TEXT NOT NULL,
    moved_by TEXT NOT NULL,
    PRIMARY KEY (prompt, label),
    FOREIGN KEY (prompt, hash) REFERENCES versions(prompt, hash)
);

CREATE TABLE evidence (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt       TEXT NOT NULL,
    hash         TEXT NOT NULL,
    run_id       TEXT,
    task         TEXT NOT NULL,
    split        TEXT NOT NULL,
    model        TEXT NOT NULL,
    metric       TEXT NOT NULL,
    n            INTEGER NOT NULL,
    mean         REAL NOT NULL,
    low          REAL NOT NULL,
    high         REAL NOT NULL,
    baseline     TEXT,                      -- hash of the version compared against
    diff         REAL,
    diff_low     REAL,
    diff_high    REAL,
    p_value      REAL,
    cost_per_execution_usd REAL,
    recorded_at  TEXT NOT NULL,
    FOREIGN KEY (prompt, hash) REFERENCES versions(prompt, hash)
);
CREATE INDEX evidence_version ON evidence(prompt, hash);

CREATE TABLE runs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,              -- generate | optimize | translate
    prompt      TEXT NOT NULL REFERENCES prompts(name),
    task        TEXT,
    algorithm   TEXT,
    started_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    dir         TEXT,
    author      TEXT NOT NULL,
    config      TEXT NOT NULL,              -- JSON
    usage       TEXT NOT NULL,              -- JSON: usage per layer
    summary     TEXT NOT NULL               -- JSON
);

CREATE TABLE run_candidates (
    run_id  TEXT NOT NULL REFERENCES runs(id),
    ord     INTEGER NOT NULL,
    id      TEXT NOT NULL,
    hash    TEXT NOT NULL,
    content TEXT NOT NULL,
    parents TEXT NOT NULL,                  -- JSON array of candidate ids
    op      TEXT NOT NULL,
    round   INTEGER NOT NULL,
    status  TEXT NOT NULL,
    mean    REAL,
    n       INTEGER NOT NULL,
    detail  TEXT NOT NULL,                  -- JSON
    PRIMARY KEY (run_id, ord)
);

-- The audit trail: who did what, when, why. Append-only.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt   TEXT NOT NULL,
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    kind     TEXT NOT NULL,                 -- add | review | label | rollback | policy
    hash     TEXT,
    label    TEXT,
    from_hash TEXT,
    decision TEXT,
    comment  TEXT
);
CREATE INDEX events_prompt ON events(prompt, id);
