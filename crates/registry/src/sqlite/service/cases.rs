//! [`CaseStore`] on SQLite: the agent's cases, one JSON row each.

use async_trait::async_trait;

use crate::Result;
use crate::service::AgentCase;
use crate::service::CaseStore;
use crate::sqlite::{from_json, get, json, stamp, time};

use super::*;

#[async_trait]
impl CaseStore for SqliteService {
    async fn save_case(&self, c: &AgentCase) -> Result<()> {
        sqlx::query(
            "INSERT INTO agent_cases (id, prompt, slice, state, opened_at, updated_at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET \
             state = excluded.state, updated_at = excluded.updated_at, body = excluded.body",
        )
        .bind(&c.id)
        .bind(&c.prompt)
        .bind(&c.slice)
        .bind(&c.state)
        .bind(stamp(c.opened_at))
        .bind(stamp(c.updated_at))
        .bind(json(&c.body)?)
        .execute(self.pool())
        .await
        .map_err(self.err("cannot store the agent's case"))?;
        Ok(())
    }

    async fn cases(&self, prompt: Option<&str>) -> Result<Vec<AgentCase>> {
        let rows = sqlx::query(
            "SELECT id, prompt, slice, state, opened_at, updated_at, body FROM agent_cases \
             WHERE ($1 IS NULL OR prompt = $1) ORDER BY opened_at, id",
        )
        .bind(prompt)
        .fetch_all(self.pool())
        .await
        .map_err(self.err("cannot read the agent's cases"))?;
        rows.iter()
            .map(|r| {
                Ok(AgentCase {
                    id: get(r, "id")?,
                    prompt: get(r, "prompt")?,
                    slice: get(r, "slice")?,
                    state: get(r, "state")?,
                    opened_at: time(&get::<String>(r, "opened_at")?)?,
                    updated_at: time(&get::<String>(r, "updated_at")?)?,
                    body: from_json(&get::<String>(r, "body")?)?,
                })
            })
            .collect()
    }
}
