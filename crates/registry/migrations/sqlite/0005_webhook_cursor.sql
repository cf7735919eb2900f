-- How far the server's webhook sender has read the library's audit trail (`events.id`): every
-- event up to it has been delivered or given up on, whoever wrote it (the server, the CLI, the
-- agent). One row; none until a server with webhooks first starts.
CREATE TABLE webhook_cursor (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    event_id INTEGER NOT NULL
);
