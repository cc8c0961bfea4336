//! Tenants' custom domains on PostgreSQL (see `journal/domains.rs`). Replicas can run two tenants' jobs
//! at once: taking a domain locks it (a transaction-level advisory lock on the domain) before checking
//! that no other tenant holds it, so of two tenants asking for one domain at once exactly one gets it.

use super::PgJournal;
use super::versions::note;
use crate::journal::JournalError;
use crate::journal::domains::note as domain_note;
use crate::pg::lock_keys;

impl PgJournal {
    pub(crate) async fn tenant_domain(&self, tenant_id: &str) -> Result<Option<String>, JournalError> {
        let value = note(&**self.conn().await?, &domain_note(tenant_id)).await?;
        Ok(value.filter(|d| !d.is_empty()))
    }

    pub(crate) async fn hold_tenant_domain(&self, tenant_id: &str, domain: Option<&str>) -> Result<bool, JournalError> {
        let (name, value) = (domain_note(tenant_id), domain.unwrap_or_default());
        let mut conn = self.conn().await?;
        // Every tenant run asks; most tenants have no custom domain and hold none: no write for them.
        if note(&**conn, &name).await?.unwrap_or_default() == value {
            return Ok(true);
        }
        let tx = conn.transaction().await?;
        if !value.is_empty() {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&lock_keys::DOMAIN, &value],
            )
            .await?;
            let held = tx
                .query_opt(
                    "SELECT name FROM meta WHERE name LIKE 'tenant-domain:%' AND value = $1 AND name <> $2 LIMIT 1",
                    &[&value, &name],
                )
                .await?;
            if held.is_some() {
                return Ok(false);
            }
        }
        tx.execute(
            "INSERT INTO meta (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&name, &value],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub(crate) async fn release_tenant_domain(&self, tenant_id: &str) -> Result<(), JournalError> {
        self.conn()
            .await?
            .execute("DELETE FROM meta WHERE name = $1", &[&domain_note(tenant_id)])
            .await?;
        Ok(())
    }
}
