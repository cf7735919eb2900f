-- The prompt-engineer agent's cases: one row per problem it found on a served prompt (a slice
-- worse than its baseline or the rest), followed through diagnosis, proposal, review, canary
-- and promotion or rollback. What the agent knows about a case is the JSON `body`; the columns
-- are what is queried.
CREATE TABLE agent_cases (
    id         TEXT PRIMARY KEY,
    prompt     TEXT NOT NULL,
    slice      TEXT NOT NULL,            -- `all` or `key=value`
    state      TEXT NOT NULL,            -- open, attempted, proposed, canary, promoted, ...
    opened_at  TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX agent_cases_prompt ON agent_cases(prompt, state);
