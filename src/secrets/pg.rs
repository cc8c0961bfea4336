//! The secret store's entries in PostgreSQL (table `secret_store`, migration 3), for replicas sharing one
//! database: any replica reads what another wrote, and entries outlive the replica that wrote them. Each
//! row is one entry exactly as the file keeps it (incarnation, base64 nonce and ciphertext, sealed and
//! opened by the same functions), so the database holds ciphertext only.

use chacha20poly1305::ChaCha20Poly1305;
use deadpool_postgres::Pool;
use secrecy::zeroize::Zeroizing;
use tokio_postgres::Row;

use super::{SecretsError, StoreEntry, forgot_earlier_record, open_entry, seal, unreadable_error};
use crate::pg::PgError;

/// Where the store is, as its messages say.
pub(super) const LOCATION: &str = "in PostgreSQL (table secret_store)";

const SELECT_ALL: &str =
    "SELECT instance_id, incarnation, nonce, ciphertext FROM secret_store ORDER BY instance_id COLLATE \"C\"";

async fn conn(pool: &Pool) -> Result<deadpool_postgres::Object, SecretsError> {
    Ok(pool.get().await.map_err(PgError::from)?)
}

fn db(e: tokio_postgres::Error) -> SecretsError {
    SecretsError::Db(PgError::from(e))
}

fn entry(r: &Row, first: usize) -> Result<StoreEntry, SecretsError> {
    Ok(StoreEntry {
        incarnation: r.try_get(first).map_err(db)?,
        nonce: r.try_get(first + 1).map_err(db)?,
        ciphertext: r.try_get(first + 2).map_err(db)?,
    })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Re-encrypts, under `cipher`, the entries that open only with one of `older`; fails naming the entries
/// that open with none. A first read without locks finds out whether anything needs it (it does only
/// after a key change); then the rows are locked, so replicas starting together re-encrypt each entry once.
pub(super) async fn rekey(
    pool: &Pool,
    cipher: &ChaCha20Poly1305,
    older: &[ChaCha20Poly1305],
) -> Result<usize, SecretsError> {
    let mut client = conn(pool).await?;
    let rows = client.query(SELECT_ALL, &[]).await.map_err(db)?;
    let mut stale = false;
    for r in &rows {
        let id: String = r.try_get(0).map_err(db)?;
        if open_entry(cipher, &id, &entry(r, 1)?).is_none() {
            stale = true;
            break;
        }
    }
    if !stale {
        return Ok(0);
    }
    let tx = client.transaction().await.map_err(db)?;
    let rows = tx.query(&format!("{SELECT_ALL} FOR UPDATE"), &[]).await.map_err(db)?;
    let (mut rekeyed, mut unreadable) = (0, Vec::new());
    for r in &rows {
        let id: String = r.try_get(0).map_err(db)?;
        let kept = entry(r, 1)?;
        if open_entry(cipher, &id, &kept).is_some() {
            continue;
        }
        match older.iter().find_map(|c| open_entry(c, &id, &kept)) {
            Some(plain) => {
                let fresh = seal(cipher, &id, kept.incarnation.as_deref(), &plain)?;
                tx.execute(
                    "UPDATE secret_store SET nonce = $2, ciphertext = $3, updated_at = $4 WHERE instance_id = $1",
                    &[&id, &fresh.nonce, &fresh.ciphertext, &now_ms()],
                )
                .await
                .map_err(db)?;
                rekeyed += 1;
            }
            None => unreadable.push(id),
        }
    }
    if !unreadable.is_empty() {
        // Dropping the transaction rolls back what was re-encrypted: the start fails as a whole.
        return Err(unreadable_error(LOCATION.to_string(), unreadable));
    }
    tx.commit().await.map_err(db)?;
    Ok(rekeyed)
}

pub(super) async fn put(pool: &Pool, instance_id: &str, e: &StoreEntry) -> Result<(), SecretsError> {
    let client = conn(pool).await?;
    let stmt = client
        .prepare_cached(
            "INSERT INTO secret_store (instance_id, incarnation, nonce, ciphertext, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (instance_id) DO UPDATE SET incarnation = excluded.incarnation, nonce = excluded.nonce,
                ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .await
        .map_err(db)?;
    client
        .execute(
            &stmt,
            &[&instance_id, &e.incarnation, &e.nonce, &e.ciphertext, &now_ms()],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// The plaintext of the incarnation's entry. Every reconcile asks, so the usual answer is one read without
/// locks; an entry of another incarnation (deleted) or from before incarnations (adopted) is decided
/// again on its locked row, since another replica may be deciding the same.
pub(super) async fn get(
    pool: &Pool,
    cipher: &ChaCha20Poly1305,
    instance_id: &str,
    incarnation: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, SecretsError> {
    const SELECT: &str = "SELECT incarnation, nonce, ciphertext FROM secret_store WHERE instance_id = $1";
    let opened =
        |e: &StoreEntry| open_entry(cipher, instance_id, e).ok_or_else(|| SecretsError::Decrypt(instance_id.into()));
    let mut client = conn(pool).await?;
    let stmt = client.prepare_cached(SELECT).await.map_err(db)?;
    let Some(row) = client.query_opt(&stmt, &[&instance_id]).await.map_err(db)? else {
        return Ok(None);
    };
    let found = entry(&row, 0)?;
    if found.incarnation.as_deref() == Some(incarnation) {
        return opened(&found).map(Some);
    }
    let tx = client.transaction().await.map_err(db)?;
    let Some(row) = tx
        .query_opt(&format!("{SELECT} FOR UPDATE"), &[&instance_id])
        .await
        .map_err(db)?
    else {
        return Ok(None);
    };
    let kept = entry(&row, 0)?;
    let plaintext = match kept.incarnation.as_deref() {
        Some(t) if t == incarnation => Some(opened(&kept)?),
        Some(_) => {
            tx.execute("DELETE FROM secret_store WHERE instance_id = $1", &[&instance_id])
                .await
                .map_err(db)?;
            forgot_earlier_record(instance_id);
            None
        }
        None => {
            let plaintext = opened(&kept)?;
            let adopted = seal(cipher, instance_id, Some(incarnation), &plaintext)?;
            tx.execute(
                "UPDATE secret_store SET incarnation = $2, nonce = $3, ciphertext = $4, updated_at = $5
                 WHERE instance_id = $1",
                &[
                    &instance_id,
                    &adopted.incarnation,
                    &adopted.nonce,
                    &adopted.ciphertext,
                    &now_ms(),
                ],
            )
            .await
            .map_err(db)?;
            Some(plaintext)
        }
    };
    tx.commit().await.map_err(db)?;
    Ok(plaintext)
}

pub(super) async fn delete(pool: &Pool, instance_id: &str) -> Result<bool, SecretsError> {
    let client = conn(pool).await?;
    let n = client
        .execute("DELETE FROM secret_store WHERE instance_id = $1", &[&instance_id])
        .await
        .map_err(db)?;
    Ok(n > 0)
}

pub(super) async fn instance_ids(pool: &Pool) -> Result<Vec<String>, SecretsError> {
    let client = conn(pool).await?;
    let rows = client
        .query(
            "SELECT instance_id FROM secret_store ORDER BY instance_id COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(db)?;
    rows.iter().map(|r| r.try_get(0).map_err(db)).collect()
}
