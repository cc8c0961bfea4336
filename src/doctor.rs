//! `cf-bridge doctor`: checks a live setup from the bridge's settings and says what to fix. Read-only: it
//! changes nothing in PocketBase or Coolify.

use std::fmt;
use std::path::Path;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::Settings;
use crate::coolify::CoolifyClient;
use crate::dependencies::describe;
use crate::metrics::Metrics;
use crate::pocketbase::{BotTemplate, PbClient};
use crate::templates::TemplateSet;
use crate::webhook::WebhookSecret;

/// The fields the bridge reads or writes, per collection; the last ones listed come with the newest
/// migrations (1767571200_cf_bridge_deletion.js, 1767657600_cf_bridge_custom_domains.js).
const SCHEMA: &[(&str, &[&str])] = &[
    (
        "tenants",
        &[
            "name",
            "slug",
            "status",
            "plan_tier",
            "max_stacks",
            "coolify_project_uuid",
            "bridge_error",
            "deletion_requested_at",
            "domain",
            "domain_verified",
        ],
    ),
    (
        "bot_templates",
        &[
            "name",
            "compose_template",
            "required_secrets",
            "default_config",
            "active",
            "version",
        ],
    ),
    (
        "bot_instances",
        &[
            "tenant",
            "template",
            "name",
            "subdomain",
            "config",
            "desired_state",
            "status",
            "error_message",
            "domain",
            "applied_hash",
            "secrets_hash",
            "router_key_id",
            "deletion_requested_at",
            "retained_until",
        ],
    ),
    (
        "deploy_logs",
        &["record_id", "collection", "action", "status", "message", "duration_ms"],
    ),
];

/// The nonce the hook signs (any 8-32 of a-z, 0-9; it proves nothing beyond the secret matching).
const NONCE: &str = "cfbridgedoctor";

/// One check's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do when it failed.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }

    pub fn get(&self, check: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            let mark = if finding.ok { "ok  " } else { "FAIL" };
            writeln!(f, "{mark} {}: {}", finding.check, finding.detail)?;
            if let Some(fix) = &finding.fix {
                writeln!(f, "     fix: {fix}")?;
            }
        }
        let failed = self.findings.iter().filter(|f| !f.ok).count();
        if failed == 0 {
            write!(f, "all {} checks passed", self.findings.len())
        } else {
            write!(f, "{failed} of {} checks failed", self.findings.len())
        }
    }
}

/// Runs every check against the PocketBase and Coolify `settings` name.
pub async fn run(settings: &Settings) -> Report {
    let mut report = Report::default();
    let pb = match PbClient::new(&settings.pocketbase) {
        Ok(pb) => Some(pb),
        Err(e) => {
            report.findings.push(Finding::fail(
                "pocketbase",
                describe(&e),
                "fix [pocketbase] in the configuration",
            ));
            None
        }
    };
    if let Some(pb) = &pb
        && pocketbase(pb, &mut report).await
    {
        report.findings.push(schema(pb).await);
        report.findings.push(hooks(pb, settings).await);
    }
    coolify(settings, &mut report).await;
    report
        .findings
        .push(templates(pb.as_ref(), &settings.reconcile.templates_dir).await);
    report
}

/// Reachable and the superuser's credentials accepted; false when the PocketBase checks cannot go on.
async fn pocketbase(pb: &PbClient, report: &mut Report) -> bool {
    if let Err(e) = pb.health().await {
        report.findings.push(Finding::fail(
            "pocketbase",
            format!("{} does not answer: {}", pb.base_url(), describe(&e)),
            "start PocketBase, or fix pocketbase.url",
        ));
        return false;
    }
    if let Err(e) = pb.authenticate().await {
        report.findings.push(Finding::fail(
            "pocketbase auth",
            describe(&e),
            "create the bridge's superuser (`pocketbase superuser upsert <email> <password> --dir pb_data`) and set \
             pocketbase.superuser_email / superuser_password (or pocketbase.token) to it",
        ));
        return false;
    }
    report.findings.push(Finding::ok(
        "pocketbase",
        format!("{} answers; superuser accepted", pb.base_url()),
    ));
    true
}

async fn schema(pb: &PbClient) -> Finding {
    let mut missing = Vec::new();
    for (collection, fields) in SCHEMA {
        match pb.api(Method::GET, &["api", "collections", collection], None).await {
            Ok((200, v)) => {
                let have: Vec<&str> = v["fields"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
                    .unwrap_or_default();
                missing.extend(
                    fields
                        .iter()
                        .filter(|f| !have.contains(f))
                        .map(|f| format!("{collection}.{f}")),
                );
            }
            Ok((status, _)) => missing.push(format!("{collection} (collection answered {status})")),
            Err(e) => return Finding::fail("schema", describe(&e), "check PocketBase"),
        }
    }
    if missing.is_empty() {
        Finding::ok(
            "schema",
            "every collection and field the bridge uses is there (migrations up to 1767657600)",
        )
    } else {
        Finding::fail(
            "schema",
            format!("missing: {}", missing.join(", ")),
            "give PocketBase the project's hooks/pb_migrations (--migrationsDir) and restart it: it applies them at start",
        )
    }
}

async fn hooks(pb: &PbClient, settings: &Settings) -> Finding {
    let ours: Option<WebhookSecret> = match settings.webhook.secret.as_ref().map(|s| s.expose_secret().parse()) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            return Finding::fail(
                "hooks",
                format!("webhook.secret: {e}"),
                "generate one with `cf-bridge secret`",
            );
        }
    };
    let answer = pb
        .api(
            Method::POST,
            &["api", "cf-bridge", "webhook-check"],
            Some(&json!({ "nonce": NONCE })),
        )
        .await;
    let v = match answer {
        Ok((200, v)) => v,
        Ok((404, _)) => {
            return Finding::fail(
                "hooks",
                "PocketBase does not have the project's hooks (no /api/cf-bridge/webhook-check)",
                "give PocketBase the project's hooks/pb_hooks (--hooksDir) and restart it",
            );
        }
        Ok((status, v)) => {
            return Finding::fail(
                "hooks",
                format!("webhook check answered {status}: {v}"),
                "check PocketBase's log",
            );
        }
        Err(e) => return Finding::fail("hooks", describe(&e), "check PocketBase"),
    };
    let url = v["url"].as_str().unwrap_or_default();
    let pocketbase_delivers = v["secret_set"] == true && !url.is_empty();
    let Some(ours) = ours else {
        // The default: no webhooks. PocketBase must not post them either (each would cost it a refused post).
        return if pocketbase_delivers {
            Finding::fail(
                "hooks",
                format!(
                    "PocketBase posts webhooks to {url} but webhook intake is off here (no webhook.secret): each change costs PocketBase a refused post"
                ),
                "unset CF_BRIDGE_WEBHOOK_URL and CF_BRIDGE_WEBHOOK_SECRET on PocketBase and restart it, or set webhook.secret to PocketBase's secret",
            )
        } else {
            Finding::ok(
                "hooks",
                "present; webhooks off on both sides (no webhook.secret): changes arrive by realtime and resync, the default",
            )
        };
    };
    if !pocketbase_delivers {
        return Finding::fail(
            "hooks",
            "PocketBase's CF_BRIDGE_WEBHOOK_URL or CF_BRIDGE_WEBHOOK_SECRET is not set: no webhooks are sent",
            format!(
                "start PocketBase with CF_BRIDGE_WEBHOOK_URL=http://<bridge>:{}/hooks/pocketbase and CF_BRIDGE_WEBHOOK_SECRET=<webhook.secret>",
                settings.admin.bind.port()
            ),
        );
    }
    if v["secret_valid"] != true {
        return Finding::fail(
            "hooks",
            "PocketBase's CF_BRIDGE_WEBHOOK_SECRET is not a whsec_ secret of printable ASCII",
            "use the bridge's webhook.secret (made by `cf-bridge secret`) on both sides",
        );
    }
    if v["signature"].as_str() != Some(ours.sign("msg_doctor", "0", NONCE.as_bytes()).as_str()) {
        return Finding::fail(
            "hooks",
            "PocketBase's CF_BRIDGE_WEBHOOK_SECRET differs from webhook.secret: every webhook is refused (401)",
            "give PocketBase the bridge's webhook.secret as CF_BRIDGE_WEBHOOK_SECRET and restart it",
        );
    }
    Finding::ok(
        "hooks",
        format!("present; webhooks go to {url}, signed with the bridge's webhook.secret"),
    )
}

async fn coolify(settings: &Settings, report: &mut Report) {
    let client = match CoolifyClient::new(&settings.coolify, std::sync::Arc::new(Metrics::new())) {
        Ok(c) => c,
        Err(e) => {
            report.findings.push(Finding::fail(
                "coolify",
                describe(&e),
                "fix [coolify] in the configuration",
            ));
            return;
        }
    };
    if let Err(e) = client.team().await {
        report.findings.push(Finding::fail(
            "coolify",
            describe(&e),
            "check coolify.url (the API must be enabled in Coolify's settings) and coolify.token (Keys & Tokens: \
             read, write and deploy abilities, sent whole with its id| prefix)",
        ));
        return;
    }
    let version = client.version().await.unwrap_or_else(|_| "unknown".into());
    report.findings.push(Finding::ok(
        "coolify",
        format!(
            "token accepted (version {version}); write and deploy abilities show at the first deploy (a 403 names them)"
        ),
    ));
    let servers = match client.servers().await {
        Ok(s) => s,
        Err(e) => {
            report.findings.push(Finding::fail(
                "coolify server",
                describe(&e),
                "check the token's read ability",
            ));
            return;
        }
    };
    let finding = match settings.coolify.server_uuid.as_deref() {
        Some(uuid) => match servers.iter().find(|s| s.uuid == uuid) {
            Some(s) if s.is_usable && s.is_reachable => {
                Finding::ok("coolify server", format!("{uuid} ({}) usable and reachable", s.name))
            }
            Some(s) => Finding::fail(
                "coolify server",
                format!("{uuid} ({}) is not usable and reachable", s.name),
                "fix the server in Coolify (Servers: validate), or set coolify.server_uuid to another",
            ),
            None => Finding::fail(
                "coolify server",
                format!("{uuid} is not a server this token can see"),
                "set coolify.server_uuid to one of Coolify's servers (or leave it unset for the first usable one)",
            ),
        },
        None => match servers.iter().find(|s| s.is_usable && s.is_reachable) {
            Some(s) => Finding::ok(
                "coolify server",
                format!("none set; new services go to {} ({})", s.uuid, s.name),
            ),
            None => Finding::fail(
                "coolify server",
                "no usable, reachable server",
                "add and validate a server in Coolify, or set coolify.server_uuid",
            ),
        },
    };
    report.findings.push(finding);
}

/// The templates directory loads, and PocketBase's `bot_templates` hold the same (name, version, compose).
async fn templates(pb: Option<&PbClient>, dir: &Path) -> Finding {
    let set = match TemplateSet::load_dir(dir) {
        Ok(s) => s,
        Err(e) => {
            return Finding::fail(
                "templates",
                format!("{}: {}", dir.display(), describe(&e)),
                "set reconcile.templates_dir to the project's templates/ (relative to the configuration file)",
            );
        }
    };
    let Some(pb) = pb else {
        return Finding::fail(
            "templates",
            "PocketBase is not reachable: cannot compare",
            "fix PocketBase first",
        );
    };
    let published: Vec<BotTemplate> = match pb.list_templates().await {
        Ok(t) => t,
        Err(e) => return Finding::fail("templates", describe(&e), "check PocketBase"),
    };
    let mut stale = Vec::new();
    for t in set.iter() {
        match published.iter().find(|p| p.name == t.name) {
            None => stale.push(format!("{} missing", t.name)),
            Some(p) if !p.active => stale.push(format!("{} inactive", t.name)),
            Some(p) if p.version != t.version || p.compose_template != t.compose_source => stale.push(format!(
                "{} differs ({} published, {} on disk)",
                t.name, p.version, t.version
            )),
            Some(_) => {}
        }
    }
    for p in published.iter().filter(|p| p.active && set.get(&p.name).is_none()) {
        stale.push(format!("{} active in PocketBase but not in {}", p.name, dir.display()));
    }
    if stale.is_empty() {
        Finding::ok(
            "templates",
            format!(
                "{} templates in {} match bot_templates",
                set.iter().count(),
                dir.display()
            ),
        )
    } else {
        Finding::fail(
            "templates",
            stale.join("; "),
            "run `cf-bridge templates sync` (publishes the directory, marks removed templates inactive)",
        )
    }
}
