-- The prompt service's records: every inference it ran, every outcome reported for one, the
-- API tokens (hashes only) and traffic splits of labels. Append-mostly; the library's own tables
-- are unchanged, so a file at schema 1 still reads as a library.

-- One served run of a prompt version. Immutable once written.
CREATE TABLE inferences (
    id            TEXT PRIMARY KEY,        -- inf_<ulid-like>, handed to the caller
    prompt        TEXT NOT NULL,
    hash          TEXT NOT NULL,           -- the version that ran
    seq           INTEGER NOT NULL,
    label         TEXT,                    -- the label it was fetched by, if any
    model         TEXT NOT NULL,           -- the execution model's canonical name
    inputs        TEXT NOT NULL,           -- JSON object
    rendered_hash TEXT NOT NULL,           -- sha256 of the rendered prompt
    output        TEXT,                    -- NULL when the call failed
    error         TEXT,                    -- why it failed (redacted)
    tags          TEXT NOT NULL,           -- JSON object of string values: the slices
    metadata      TEXT NOT NULL,           -- JSON: whatever the caller attached
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd      REAL,                    -- NULL when the model has no price
    latency_ms    REAL NOT NULL,
    caller        TEXT NOT NULL,           -- the token's name, or `local`
    created_at    TEXT NOT NULL
);
CREATE INDEX inferences_prompt_time ON inferences(prompt, created_at);
CREATE INDEX inferences_time ON inferences(created_at);

-- An outcome of an inference: a score, a label, a corrected output, a comment.
CREATE TABLE feedback (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    inference_id TEXT NOT NULL,
    score        REAL,                     -- in [0, 1]; NULL when only a label was given
    label        TEXT,
    correction   TEXT,                     -- the output it should have been
    comment      TEXT,
    source       TEXT NOT NULL,            -- user | metric | human
    caller       TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE INDEX feedback_inference ON feedback(inference_id);
CREATE INDEX feedback_time ON feedback(created_at);

-- API tokens: only the sha256 of the secret is kept.
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL,              -- viewer | runner | editor | reviewer | admin
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT
);

-- A label's canary: a second version that serves `weight` percent of its traffic.
CREATE TABLE label_splits (
    prompt TEXT NOT NULL,
    label  TEXT NOT NULL,
    hash   TEXT NOT NULL,
    weight REAL NOT NULL,                  -- percent of requests, in (0, 100)
    set_at TEXT NOT NULL,
    set_by TEXT NOT NULL,
    PRIMARY KEY (prompt, label),
    FOREIGN KEY (prompt, label) REFERENCES labels(prompt, label),
    FOREIGN KEY (prompt, hash) REFERENCES versions(prompt, hash)
);
