//! Further apply sessions: net changes split by a hash of their key, each session's part of a
//! group prepared (two-phase) and committed after the main session's commit; and what a
//! crash between the two leaves behind, resolved by the next session.

use super::*;

/// A further apply session: net changes whose key hashes to it, in a transaction of its own
/// that the group's commit prepares and commits after the main session's.
pub(super) struct Second {
    pub(super) client: Arc<Client>,
    pub(super) statements: HashMap<String, Statement>,
    /// Its transaction has begun (or will, in the task that has its first work).
    pub(super) in_tx: bool,
    /// Hashes of the keys it changed in its open transaction, per table (by name: a table's
    /// description may be sent again within a group): the main session must not touch them
    /// before the group commits, or it would wait for their row locks while the group waits
    /// for it.
    pub(super) keys: HashMap<String, HashSet<u64>>,
}

/// Keys the further sessions may take per group; past that, new keys stay on the main
/// session, so a source transaction of any size keeps the sets bounded.
pub(super) const SECOND_KEYS: usize = 200_000;

pub(super) fn key_hash(key: &[Bytes]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in key {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.digest()
}

/// How many prepared transactions the target can hold: each further session prepares one
/// per group (the setting needs a server restart, so it is read once per session).
pub async fn prepared_transactions_allowed(client: &Client) -> Result<usize, Error> {
    let n: i32 = client
        .query_one(
            "SELECT current_setting('max_prepared_transactions')::int",
            &[],
        )
        .await
        .map_err(sql("target", "read max_prepared_transactions"))?
        .get(0);
    Ok(usize::try_from(n).unwrap_or(0))
}

impl Applier {
    /// The further session that changed this key of the table in the group, if any.
    pub(super) fn holder(&self, table: &str, hash: u64) -> Option<usize> {
        self.seconds
            .iter()
            .position(|s| s.keys.get(table).is_some_and(|k| k.contains(&hash)))
    }

    /// Whether a further session changed rows of the table in this group.
    pub(super) fn held(&self, table: &str) -> bool {
        self.seconds.iter().any(|s| s.keys.contains_key(table))
    }
}

/// Finishes the prepared parts of groups that an earlier session of this origin left
/// behind (it stopped between PREPARE and COMMIT PREPARED): committed where the origin
/// reached the group's LSN (its main part committed), rolled back otherwise.
pub(super) async fn resolve_prepared(client: &Client, origin: &str) -> Result<(), Error> {
    let parts = state::prepared_parts(client, origin).await?;
    if parts.is_empty() {
        return Ok(());
    }
    let progress = crate::session::origin_progress(client, origin).await?;
    for gid in parts {
        let Some(lsn) = state::names::prepared_part_lsn(origin, &gid) else {
            continue;
        };
        let commit = progress.is_some_and(|p| p >= lsn);
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        tracing::info!(
            gid,
            committed = commit,
            "finishing a prepared part of a group"
        );
        client
            .batch_execute(&format!("{verb} PREPARED {}", conn::quote_literal(&gid)))
            .await
            .map_err(sql("target", format!("finish prepared transaction {gid}")))?;
    }
    Ok(())
}
