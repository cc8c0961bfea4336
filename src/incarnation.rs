//! One life of a `bot_instances` record.
//!
//! A record id can come back: a superuser may create a record with a chosen id after the first one was
//! deleted, and a delete followed by such a create can reach the bridge as one job that only sees the new
//! record. Everything the bridge keeps per instance (stored secrets, the service intent, the Coolify
//! service, the router key id) is therefore bound to the record's *incarnation*: its id, its tenant and
//! its `created` time. PocketBase sets `created` itself and refuses to let anyone, superusers included,
//! write it, so a new record never shares the tag of an old one, while the tag of a live record is the
//! same on every read and survives the loss of the journal.

use sha2::{Digest, Sha256};

const LABEL: &[u8] = b"cf-bridge/v1/incarnation\0";
const MARKER_PREFIX: &str = "[cf-bridge life ";

/// The tag of one incarnation: 32 lowercase hex digits.
pub fn tag(instance_id: &str, tenant_id: &str, created: &str) -> String {
    let mut h = Sha256::new();
    h.update(LABEL);
    for part in [instance_id, tenant_id, created] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// The mark a service carries in its Coolify description, naming the incarnation that created it.
pub fn marker(tag: &str) -> String {
    format!("{MARKER_PREFIX}{tag}]")
}

/// The incarnation a Coolify description names, if any. Services created before incarnations existed
/// carry none.
pub fn marked(description: Option<&str>) -> Option<&str> {
    let d = description?;
    let start = d.find(MARKER_PREFIX)? + MARKER_PREFIX.len();
    let rest = &d[start..];
    let tag = &rest[..rest.find(']')?];
    (tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then_some(tag)
}

/// Whether a service described so belongs to another incarnation than `tag` (unmarked services, made
/// before incarnations existed, belong to whoever has the name).
pub fn is_other_life(description: Option<&str>, tag: &str) -> bool {
    marked(description).is_some_and(|t| t != tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_depends_on_every_part_without_ambiguity() {
        let t = tag("abc", "t1", "2026-01-01 00:00:00.000Z");
        assert_eq!(t.len(), 32);
        assert_eq!(t, tag("abc", "t1", "2026-01-01 00:00:00.000Z"));
        assert_ne!(t, tag("abc", "t2", "2026-01-01 00:00:00.000Z"));
        assert_ne!(t, tag("abc", "t1", "2026-01-01 00:00:00.001Z"));
        assert_ne!(t, tag("abd", "t1", "2026-01-01 00:00:00.000Z"));
        assert_ne!(tag("ab", "ct1", ""), tag("abc", "t1", ""));
    }

    #[test]
    fn marker_round_trips_and_tells_lives_apart() {
        let t = tag("abc", "t1", "c");
        let description = format!("CloudFreedom instance abc {}", marker(&t));
        assert_eq!(marked(Some(&description)), Some(t.as_str()));
        assert!(!is_other_life(Some(&description), &t));
        assert!(is_other_life(Some(&description), &tag("abc", "t1", "d")));
        assert!(!is_other_life(Some("CloudFreedom instance abc (bot)"), &t));
        assert!(!is_other_life(None, &t));
        assert_eq!(marked(Some("[cf-bridge life nothex]")), None);
    }
}
