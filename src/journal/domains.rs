//! Which tenant serves its instances under which custom domain (in ASCII form), as the tenant's job
//! decided: instances read it here rather than asking PocketBase, and a domain another tenant's spelling
//! maps to (`ACME.example`, `acme.example`; `bücher.example`, `xn--bcher-kva.example`) is refused to all
//! but the tenant that holds it.

use rusqlite::{OptionalExtension, params};

use super::{Journal, JournalError, write_tx};

pub(super) fn note(tenant_id: &str) -> String {
    format!("tenant-domain:{tenant_id}")
}

impl Journal {
    /// The custom domain the tenant's instances are served under, if any.
    pub async fn tenant_domain(&self, tenant_id: &str) -> Result<Option<String>, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.tenant_domain(tenant_id)).await;
        }
        Ok(self.note(&note(tenant_id)).await?.filter(|d| !d.is_empty()))
    }

    /// Gives the tenant `domain` (or none), unless another tenant holds it: then returns false and changes
    /// nothing. Checked and written in one transaction, so two tenants cannot both take a domain.
    pub async fn hold_tenant_domain(&self, tenant_id: &str, domain: Option<&str>) -> Result<bool, JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.hold_tenant_domain(tenant_id, domain)).await;
        }
        let (name, value) = (note(tenant_id), domain.unwrap_or_default().to_owned());
        // Every tenant run asks; most tenants have no custom domain and hold none: no write for them.
        if self.note(&name).await?.unwrap_or_default() == value {
            return Ok(true);
        }
        self.write(move |conn| {
            write_tx(conn, |tx| {
                if !value.is_empty() {
                    let held: Option<String> = tx
                        .prepare_cached(
                            "SELECT name FROM meta WHERE name LIKE 'tenant-domain:%' AND value = ?1 AND name != ?2",
                        )?
                        .query_row(params![value, name], |r| r.get(0))
                        .optional()?;
                    if held.is_some() {
                        return Ok(false);
                    }
                }
                tx.prepare_cached(
                    "INSERT INTO meta (name, value) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![name, value])?;
                Ok(true)
            })
        })
        .await
    }

    /// The tenant is gone: its domain is free.
    pub async fn release_tenant_domain(&self, tenant_id: &str) -> Result<(), JournalError> {
        if let Some(pg) = self.pg() {
            return Box::pin(pg.release_tenant_domain(tenant_id)).await;
        }
        self.forget_note(&note(tenant_id)).await
    }
}
