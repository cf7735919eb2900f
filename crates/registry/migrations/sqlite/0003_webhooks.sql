-- Every webhook delivery attempt, for operators to see what was sent where and how it went.
CREATE TABLE webhook_deliveries (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,              -- the same on every retry of one event
    event    TEXT NOT NULL,              -- review.decided, label.moved, ...
    url      TEXT NOT NULL,
    attempt  INTEGER NOT NULL,           -- 1 for the first try
    status   INTEGER,                    -- the HTTP status; NULL when no answer came
    error    TEXT,                       -- NULL when delivered
    at       TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);
