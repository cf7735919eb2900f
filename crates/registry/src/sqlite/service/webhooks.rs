//! [`WebhookLog`] on SQLite: delivery attempts and the delivery cursor.

use async_trait::async_trait;

use crate::Result;
use crate::service::Delivery;
use crate::service::WebhookLog;
use crate::sqlite::{get, stamp, time};

use super::*;

#[async_trait]
impl WebhookLog for SqliteService {
    async fn record_delivery(&self, d: &Delivery) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_deliveries (event_id, event, url, attempt, status, error, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&d.event_id)
        .bind(&d.event)
        .bind(&d.url)
        .bind(i64::from(d.attempt))
        .bind(d.status.map(i64::from))
        .bind(&d.error)
        .bind(stamp(d.at))
        .execute(self.pool())
        .await
        .map_err(self.err("cannot log the delivery"))?;
        Ok(())
    }

    async fn webhook_cursor(&self) -> Result<Option<i64>> {
        sqlx::query_scalar("SELECT event_id FROM webhook_cursor WHERE id = 1")
            .fetch_optional(self.pool())
            .await
            .map_err(self.err("cannot read the webhook cursor"))
    }

    async fn set_webhook_cursor(&self, event_id: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhook_cursor (id, event_id) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET event_id = excluded.event_id",
        )
        .bind(event_id)
        .execute(self.pool())
        .await
        .map_err(self.err("cannot store the webhook cursor"))?;
        Ok(())
    }

    async fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT event_id, event, url, attempt, status, error, at FROM webhook_deliveries \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await
        .map_err(self.err("cannot read deliveries"))?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    event_id: get(r, "event_id")?,
                    event: get(r, "event")?,
                    url: get(r, "url")?,
                    attempt: get::<i64>(r, "attempt")? as u32,
                    status: get::<Option<i64>>(r, "status")?.map(|s| s as u16),
                    error: get(r, "error")?,
                    at: time(&get::<String>(r, "at")?)?,
                })
            })
            .collect()
    }
}
