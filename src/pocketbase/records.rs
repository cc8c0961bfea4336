//! Record types of the cf-bridge collections, and the patches the bridge is allowed to write.
//!
//! PocketBase sends empty text, select and date fields as `""` and unset json as `null`; those become `None`.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use compact_str::CompactString;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::quota::PlanTier;

pub const TENANTS: &str = "tenants";
pub const BOT_TEMPLATES: &str = "bot_templates";
pub const BOT_INSTANCES: &str = "bot_instances";
pub const DEPLOY_LOGS: &str = "deploy_logs";

/// Longest `error_message` the schema accepts (characters).
pub const ERROR_MESSAGE_MAX: usize = 2000;
/// Longest `pending_reason` the schema accepts (characters).
pub const PENDING_REASON_MAX: usize = 2000;
/// Longest `bridge_error` the schema accepts (characters).
pub const BRIDGE_ERROR_MAX: usize = 2000;
/// Longest deploy log `message` the schema accepts (characters).
pub const LOG_MESSAGE_MAX: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    Pending,
    Deploying,
    Running,
    Stopped,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    Deploy,
    Update,
    Start,
    Stop,
    Restart,
    Destroy,
    Secrets,
    ProjectCreate,
    ProjectDelete,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployStatus {
    Success,
    Failed,
    Pending,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub slug: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub user: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status: Option<TenantStatus>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub plan_tier: Option<PlanTier>,
    /// 0 = use the plan's stack count.
    #[serde(default)]
    pub max_stacks: u32,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub coolify_project_uuid: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub bridge_error: Option<String>,
    /// The tenant's custom domain (admin-set); its instances are served under it once `domain_verified`.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub domain: Option<String>,
    #[serde(default)]
    pub domain_verified: bool,
    /// Set by the tenant's user, the Admin Portal or an admin: every instance of the tenant is deleted
    /// (each after its retention period), then the tenant.
    #[serde(default, with = "pb_date")]
    pub deletion_requested_at: Option<DateTime<Utc>>,
    /// Who last asked for a change (`<auth collection>:<id>`, stamped by `hooks/pb_hooks/actor.pb.js`).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub changed_by: Option<String>,
    #[serde(default, with = "pb_date")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, with = "pb_date")]
    pub updated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotTemplate {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub compose_template: String,
    #[serde(default)]
    pub required_secrets: serde_json::Value,
    #[serde(default)]
    pub default_config: serde_json::Value,
    #[serde(default)]
    pub icon: String,
    /// Cores, e.g. 0.25.
    #[serde(default)]
    pub cpu_default: f64,
    /// MB.
    #[serde(default)]
    pub mem_default: u32,
    #[serde(default)]
    pub public_service: String,
    #[serde(default)]
    pub public_port: u16,
    #[serde(default)]
    pub active: bool,
    #[serde(default)]
    pub version: String,
    #[serde(default, with = "pb_date")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, with = "pb_date")]
    pub updated: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotInstance {
    pub id: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub subdomain: String,
    #[serde(default)]
    pub config: serde_json::Value,
    /// Cores; 0 = the template's default.
    #[serde(default)]
    pub cpu_limit: f64,
    /// MB; 0 = the template's default.
    #[serde(default)]
    pub mem_limit: u32,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub desired_state: Option<DesiredState>,
    #[serde(default, with = "pb_date")]
    pub restart_requested_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status: Option<InstanceStatus>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub coolify_service_id: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub coolify_project_id: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub error_message: Option<String>,
    /// Why a `pending` instance waits (secrets, its tenant's project, a stack slot); empty otherwise.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub pending_reason: Option<String>,
    #[serde(default, with = "pb_date")]
    pub last_healthy_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub secrets_hash: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub applied_hash: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub domain: Option<String>,
    /// The version of its template the stack was last rendered from (bridge-owned; empty before any).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub template_version: Option<String>,
    /// The id of the stack's current router key (see [`crate::secrets::router_api_key`]); not a secret.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub router_key_id: Option<String>,
    /// Set by the tenant's user, the Admin Portal or an admin: the instance is to be deleted, after its
    /// retention period (see `reconcile::retention`).
    #[serde(default, with = "pb_date")]
    pub deletion_requested_at: Option<DateTime<Utc>>,
    /// Until when a deleted instance's service is kept (bridge-owned).
    #[serde(default, with = "pb_date")]
    pub retained_until: Option<DateTime<Utc>>,
    /// Who last asked for a change (`<auth collection>:<id>`, stamped by `hooks/pb_hooks/actor.pb.js`).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub changed_by: Option<String>,
    #[serde(default, with = "pb_date")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, with = "pb_date")]
    pub updated: Option<DateTime<Utc>>,
}

/// What the health poller keeps of an instance between listings: the fields it judges by, a few hundred
/// bytes where the whole record (config included) can take kilobytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct WatchedInstance {
    /// Ids and uuids fit inside a `CompactString`: no allocation of their own, for each instance watched.
    pub id: CompactString,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status: Option<InstanceStatus>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub coolify_service_id: Option<CompactString>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub error_message: Option<String>,
    #[serde(default, with = "pb_date")]
    pub last_healthy_at: Option<DateTime<Utc>>,
    #[serde(default, with = "pb_date")]
    pub updated: Option<DateTime<Utc>>,
}

impl WatchedInstance {
    /// The instances the health poller watches: with a service, `running` or `error`.
    pub const FILTER: &'static str = "coolify_service_id != '' && (status = 'running' || status = 'error')";
}

/// What names an instance's incarnation: all the orphan scan keeps of each live instance.
#[derive(Debug, Deserialize)]
pub struct InstanceLife {
    pub id: String,
    #[serde(default)]
    pub tenant: String,
    #[serde(default, with = "pb_date")]
    pub created: Option<DateTime<Utc>>,
}

/// A tenant's slug: all the orphan scan keeps of each live tenant.
#[derive(Debug, Deserialize)]
pub struct TenantSlug {
    #[serde(default)]
    pub slug: String,
}

/// What the resync keeps of each instance it lists: the version and the applied spec it compares, and what
/// the health poller watches. Decoded from the listed record directly: the rest of it (config included)
/// is skipped, not kept.
#[derive(Debug, Deserialize)]
pub struct ListedInstance {
    pub id: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status: Option<InstanceStatus>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub coolify_service_id: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub error_message: Option<String>,
    #[serde(default, with = "pb_date")]
    pub last_healthy_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub applied_hash: Option<String>,
    #[serde(default, with = "pb_date")]
    pub updated: Option<DateTime<Utc>>,
}

impl ListedInstance {
    /// What the poller keeps of it, when [`WatchedInstance::FILTER`] selects it (the same test, on a record
    /// already listed).
    pub fn watched(&self) -> Option<WatchedInstance> {
        let service = self.coolify_service_id.as_deref()?;
        matches!(self.status, Some(InstanceStatus::Running | InstanceStatus::Error)).then(|| WatchedInstance {
            id: self.id.as_str().into(),
            status: self.status,
            coolify_service_id: Some(service.into()),
            error_message: self.error_message.clone(),
            last_healthy_at: self.last_healthy_at,
            updated: self.updated,
        })
    }
}

/// The one listing of the instances the health poller watches, with the count of instance changes
/// ([`crate::intake::Intake::instance_changes`]) at which it is current: the poller's own (current while
/// the count stands still) or the last resync pass's (current when the count has moved since that listing
/// began by the end of that pass alone: any instance event between, a change or the pass's own findings,
/// may be missing from it). One slot for both: a resync pass always moves the count, so it lets the
/// poller's listing go as it starts listing instead of holding a second copy of the fleet beside its own.
#[derive(Debug, Default)]
pub(super) struct WatchedListing(Mutex<Option<(u64, Vec<WatchedInstance>)>>);

impl WatchedListing {
    /// Keeps `instances` as current at count `current_at`, in place of what was kept.
    pub(super) fn keep(&self, current_at: u64, instances: Vec<WatchedInstance>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((current_at, instances));
    }

    /// Lets what is kept go.
    pub(super) fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The listing if it is current at `changes`; one the count has passed is dropped, one not yet current
    /// (its pass has not ended) is kept.
    pub(super) fn take(&self, changes: u64) -> Option<Vec<WatchedInstance>> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let current_at = kept.as_ref()?.0;
        match current_at.cmp(&changes) {
            std::cmp::Ordering::Equal => kept.take().map(|(_, instances)| instances),
            std::cmp::Ordering::Less => {
                *kept = None;
                None
            }
            std::cmp::Ordering::Greater => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployLog {
    pub id: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub instance: Option<String>,
    /// The instance or tenant id; kept as text because the record may be gone.
    #[serde(default)]
    pub record_id: String,
    #[serde(default)]
    pub collection: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub tenant: Option<String>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub action: Option<DeployAction>,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub status: Option<DeployStatus>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub triggered_by: String,
    #[serde(default, deserialize_with = "empty_as_none")]
    pub triggered_by_user: Option<String>,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default, with = "pb_date")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default, with = "pb_date")]
    pub updated: Option<DateTime<Utc>>,
}

/// The bridge-owned fields of a `bot_instances` record; `None` leaves a field as it is,
/// `Some(String::new())` clears a text field.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstancePatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<InstanceStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coolify_service_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coolify_project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "pb_date::serialize")]
    pub last_healthy_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_key_id: Option<String>,
    /// When a deleted instance's service and volumes are destroyed (bridge-owned; a PocketBase date, empty
    /// clears it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained_until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_version: Option<String>,
}

impl InstancePatch {
    pub fn is_empty(&self) -> bool {
        *self == InstancePatch::default()
    }
}

/// The bridge-owned fields of a `tenants` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coolify_project_uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge_error: Option<String>,
}

impl TenantPatch {
    pub fn is_empty(&self) -> bool {
        *self == TenantPatch::default()
    }
}

/// A `deploy_logs` row to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewDeployLog {
    /// Set while the instance exists; `None` for tenant actions and for logs written after a destroy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    pub record_id: String,
    pub collection: String,
    /// Lets the tenant's user read the row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub action: DeployAction,
    pub status: DeployStatus,
    pub message: String,
    /// `cf-bridge`, `operator`, or the acting auth record as `<collection>:<id>`.
    pub triggered_by: String,
    /// The user whose change the action carried out, if a user's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggered_by_user: Option<String>,
    pub duration_ms: u64,
}

/// Parses a PocketBase date (`2026-11-22 15:21:17.216Z`, RFC 3339 also accepted); `""` is `None`.
pub fn parse_pb_date(s: &str) -> Result<Option<DateTime<Utc>>, chrono::ParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    // chrono's RFC 3339 parser takes PocketBase's space for the `T`, and reads by position where a format
    // string (`%Y-%m-%d %H:%M:%S%.fZ`) is interpreted anew on each call: every realtime frame carries dates.
    DateTime::parse_from_rfc3339(s).map(|d| Some(d.with_timezone(&Utc)))
}

/// Formats a date the way PocketBase stores it, for writes and for filters such as `updated >= '…'`.
pub fn format_pb_date(d: &DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true).replacen('T', " ", 1)
}

/// Quotes a value for a PocketBase filter expression, e.g. `name = {quoted}`.
pub fn filter_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Cuts `s` to at most `max` characters (PocketBase counts characters, not bytes).
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s.to_string(),
    }
}

/// `null` and `""` become `None`; anything else must parse as `T`.
fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(D::Error::custom),
    }
}

pub(super) mod pb_date {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => parse_pb_date(&s).map_err(|e| D::Error::custom(format!("bad date {s:?}: {e}"))),
        }
    }

    pub fn serialize<S: Serializer>(v: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&format_pb_date(d)),
            None => s.serialize_str(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, Timelike};
    use serde_json::json;

    #[test]
    fn dates_round_trip_in_pocketbase_format() {
        let d = parse_pb_date("2026-11-22 15:21:17.216Z").unwrap().unwrap();
        assert_eq!((d.year(), d.hour(), d.timestamp_subsec_millis()), (2026, 15, 216));
        assert_eq!(format_pb_date(&d), "2026-11-22 15:21:17.216Z");
        assert_eq!(parse_pb_date("").unwrap(), None);
        assert_eq!(parse_pb_date("2026-11-22T15:21:17.216Z").unwrap(), Some(d));
        assert!(parse_pb_date("yesterday").is_err());
        let whole = parse_pb_date("2026-11-22 15:21:17Z").unwrap().unwrap();
        assert_eq!((whole.second(), whole.timestamp_subsec_millis()), (17, 0));
        // A date without its zone is not taken for UTC.
        assert!(parse_pb_date("2026-11-22 15:21:17.216").is_err());
        assert!(parse_pb_date("2026-11-22 15:21").is_err());
    }

    fn watched(id: &str) -> WatchedInstance {
        WatchedInstance {
            id: id.into(),
            status: None,
            coolify_service_id: None,
            error_message: None,
            last_healthy_at: None,
            updated: None,
        }
    }

    #[test]
    fn a_listing_serves_only_the_count_it_is_current_at() {
        let listing = WatchedListing::default();
        assert_eq!(listing.take(0), None, "nothing kept");
        // A resync pass's listing, begun at 5: current at its end, 6.
        listing.keep(6, vec![watched("a")]);
        assert_eq!(listing.take(5), None, "the pass has not ended: kept");
        assert_eq!(listing.take(6), Some(vec![watched("a")]), "ended, nothing else came");
        assert_eq!(listing.take(6), None, "taken once");
        listing.keep(7, vec![watched("b")]);
        assert_eq!(listing.take(8), None, "an instance event came during the pass");
        assert_eq!(listing.take(7), None, "and the stale listing is gone");
        // The poller's own listing, current while the count stands still, let go by a pass that starts.
        listing.keep(8, vec![watched("c")]);
        assert_eq!(listing.take(8), Some(vec![watched("c")]));
        listing.keep(8, vec![watched("c")]);
        listing.clear();
        assert_eq!(listing.take(8), None, "let go");
    }

    #[test]
    fn a_watched_instance_made_from_a_record_read_is_the_one_its_filter_lists() {
        let record = |status: &str, service: &str, error: &str| {
            json!({"id": "abcdefghijklmno", "tenant": "t", "name": "n", "template": "x", "subdomain": "s",
                "status": status, "coolify_service_id": service, "error_message": error,
                "last_healthy_at": "2026-11-22 15:21:17.216Z", "updated": "2026-11-23 13:14:28.226Z"})
        };
        for (status, service, error, listed) in [
            ("running", "svc1", "", true),
            (
                "error",
                "svc1",
                "health check: service svc1 reads exited for 3 consecutive checks",
                true,
            ),
            ("error", "svc1", "", true),
            ("stopped", "svc1", "", false),
            ("deploying", "svc1", "", false),
            ("pending", "", "", false),
            ("running", "", "", false),
        ] {
            let raw = record(status, service, error);
            let inst: ListedInstance = serde_json::from_value(raw.clone()).unwrap();
            let as_listed: WatchedInstance = serde_json::from_value(raw).unwrap();
            let made = inst.watched();
            assert_eq!(made.is_some(), listed, "{status} {service:?}");
            if listed {
                assert_eq!(made, Some(as_listed), "{status} {error:?}");
            }
        }
    }

    #[test]
    fn instance_from_fresh_record_has_empty_fields_as_none() {
        let raw = json!({"applied_hash":"","collectionId":"pbc_1222840300","collectionName":"bot_instances",
            "config":null,"coolify_project_id":"","coolify_service_id":"","cpu_limit":0,
            "created":"2026-11-23 13:14:28.226Z","desired_state":"running","domain":"","error_message":"",
            "id":"lvhcb1xq2a2017k","last_healthy_at":"","mem_limit":0,"name":"b","restart_requested_at":"",
            "secrets_hash":"","status":"","subdomain":"b1","template":"gy3jejlmff82383",
            "tenant":"khncxt6jwt9zg1p","updated":"2026-11-23 13:14:28.226Z"});
        let i: BotInstance = serde_json::from_value(raw).unwrap();
        assert_eq!(i.desired_state, Some(DesiredState::Running));
        assert_eq!(i.status, None);
        assert_eq!(i.coolify_service_id, None);
        assert_eq!(i.last_healthy_at, None);
        assert!(i.config.is_null());
        assert!(i.updated.is_some());
    }

    #[test]
    fn unknown_select_value_is_an_error_naming_it() {
        let err = serde_json::from_value::<BotInstance>(json!({"id":"x","status":"exploded"})).unwrap_err();
        assert!(err.to_string().contains("exploded"), "{err}");
    }

    #[test]
    fn patches_serialize_only_set_fields() {
        let p = InstancePatch {
            status: Some(InstanceStatus::Error),
            error_message: Some(String::new()),
            last_healthy_at: parse_pb_date("2026-01-02 03:04:05.006Z").unwrap(),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"status":"error","error_message":"","last_healthy_at":"2026-01-02 03:04:05.006Z"})
        );
        assert!(InstancePatch::default().is_empty());
        assert_eq!(serde_json::to_value(TenantPatch::default()).unwrap(), json!({}));
    }

    #[test]
    fn deploy_log_actions_use_snake_case() {
        let log = NewDeployLog {
            instance: None,
            record_id: "abc".into(),
            collection: TENANTS.into(),
            tenant: Some("abc".into()),
            action: DeployAction::ProjectCreate,
            status: DeployStatus::Success,
            message: "ok".into(),
            triggered_by: "reconcile".into(),
            triggered_by_user: None,
            duration_ms: 12,
        };
        let v = serde_json::to_value(&log).unwrap();
        assert_eq!(v["action"], "project_create");
        assert!(v.get("instance").is_none());
    }

    #[test]
    fn quoting_and_truncation() {
        assert_eq!(filter_quote("o'brien"), r"'o\'brien'");
        assert_eq!(truncate_chars("äöü", 2), "äö");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }
}
