//! [`TokenStore`] on SQLite: API tokens by the hash of their secret.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;

use crate::service::TokenStore;
use crate::service::{Role, Token};
use crate::sqlite::{get, stamp, time};
use crate::{RegistryError, Result};

use super::*;

#[async_trait]
impl TokenStore for SqliteService {
    async fn add_token(&self, token: &Token, hash: &str) -> Result<()> {
        crate::policy::check_prompt_name(&token.name).map_err(|_| RegistryError::Invalid {
            what: "token name",
            value: token.name.clone(),
            expected: "letters, digits, `-`, `_` or `.`, starting with a letter or digit".into(),
        })?;
        let done = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&token.name)
        .bind(token.role.as_str())
        .bind(hash)
        .bind(stamp(token.created_at))
        .bind(&token.created_by)
        .execute(self.pool())
        .await
        .map_err(self.err("cannot store the token"))?;
        if done.rows_affected() == 0 {
            return Err(RegistryError::Invalid {
                what: "token name",
                value: token.name.clone(),
                expected: "a name no other token has (`tokens list` shows them)".into(),
            });
        }
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<Token>> {
        let row = sqlx::query(
            "SELECT name, role, created_at, created_by, revoked_at FROM tokens \
             WHERE hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(self.pool())
        .await
        .map_err(self.err("cannot read tokens"))?;
        row.as_ref().map(token).transpose()
    }

    async fn tokens(&self) -> Result<Vec<Token>> {
        let rows = sqlx::query(
            "SELECT name, role, created_at, created_by, revoked_at FROM tokens ORDER BY name",
        )
        .fetch_all(self.pool())
        .await
        .map_err(self.err("cannot read tokens"))?;
        rows.iter().map(token).collect()
    }

    async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> Result<bool> {
        let done =
            sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
                .bind(name)
                .bind(stamp(at))
                .execute(self.pool())
                .await
                .map_err(self.err("cannot revoke the token"))?;
        Ok(done.rows_affected() > 0)
    }
}

fn token(r: &SqliteRow) -> Result<Token> {
    Ok(Token {
        name: get(r, "name")?,
        role: Role::parse(&get::<String>(r, "role")?)?,
        created_at: time(&get::<String>(r, "created_at")?)?,
        created_by: get(r, "created_by")?,
        revoked_at: get::<Option<String>>(r, "revoked_at")?
            .map(|s| time(&s))
            .transpose()?,
    })
}
