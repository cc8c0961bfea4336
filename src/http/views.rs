//! The operator page's markup, as pure functions of records and journal rows. Everything taken from a
//! record or a row is escaped (`esc`): names, domains and messages are tenant input.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::coolify::CoolifyCall;
use crate::events::{Collection, valid_record_id};
use crate::journal::{AttemptRow, EventRow, EventStatus, Intent, JobRow, OutboxEntry};
use crate::pocketbase::records::{BotInstance, DeployLog, Tenant};
use crate::reconcile::judgement::LiveHealth;

/// Escapes text for HTML bodies and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn text(v: &Option<String>) -> String {
    esc(v.as_deref().unwrap_or(""))
}

/// A select value as PocketBase spells it.
pub fn sel<T: serde::Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|x| serde_json::to_value(x).ok())
        .and_then(|x| x.as_str().map(esc))
        .unwrap_or_default()
}

pub fn when_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn when(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

/// Why an instance is not simply running: what it waits for (pending) or what went wrong (error).
pub fn reason(i: &BotInstance) -> String {
    match (&i.pending_reason, &i.error_message) {
        (Some(p), _) => format!("<span class=\"pending\">waiting: {}</span>", esc(p)),
        (None, Some(e)) => format!("<span class=\"error\">{}</span>", esc(e)),
        (None, None) => String::new(),
    }
}

fn health_cell(h: Option<&LiveHealth>) -> String {
    match h {
        Some(l) => {
            let v = l.judgement.verdict.as_str();
            let class = match v {
                "healthy" => "running",
                "suspect" => "pending",
                _ => "error",
            };
            format!(
                "<span class=\"{class}\" title=\"checked {}\">{v}</span>",
                l.checked_at.format("%H:%M:%S")
            )
        }
        None => "<span class=\"muted\">-</span>".into(),
    }
}

/// A tenant as the instance tables name it: its slug, and its suspension.
pub fn tenant_cell(t: Option<&Tenant>, id: &str) -> String {
    match t {
        Some(t) => {
            let suspended = sel(&t.status) == "suspended";
            format!(
                "{}{}",
                esc(&t.slug),
                if suspended {
                    " <span class=\"error\">(suspended)</span>"
                } else {
                    ""
                }
            )
        }
        None => format!("<code>{}</code>", esc(id)),
    }
}

/// One row of the instances table; its id lets the page replace it when the instance changes.
pub fn instance_row(i: &BotInstance, tenant: Option<&Tenant>, health: Option<&LiveHealth>) -> String {
    let id = esc(&i.id);
    format!(
        "<tr id=\"inst-{id}\" data-tenant=\"{}\"><td><a href=\"/admin/ui/instances/{id}\">{}</a><br><code>{id}</code></td>\
         <td class=\"tenant\">{}</td><td>{}</td><td>{}</td><td data-col=\"status\" class=\"{}\">{}</td><td data-col=\"health\">{}</td>\
         <td class=\"reason\">{}</td><td><code>{}</code></td></tr>",
        esc(&i.tenant),
        esc(&i.name),
        tenant_cell(tenant, &i.tenant),
        text(&i.domain),
        sel(&i.desired_state),
        sel(&i.status),
        sel(&i.status),
        health_cell(health),
        reason(i),
        text(&i.changed_by)
    )
}

pub const INSTANCES_HEAD: &str = "<tr><th>instance</th><th>tenant</th><th>domain</th><th>desired</th><th>status</th>\
                                  <th>live health</th><th>reason</th><th>changed by</th></tr>";

fn replay_button(field: &str, value: &str, back: Option<&str>, label: &str) -> String {
    let back = back
        .filter(|b| valid_record_id(b))
        .map(|b| format!("<input type=\"hidden\" name=\"back\" value=\"{}\">", esc(b)))
        .unwrap_or_default();
    format!(
        "<form method=\"post\" action=\"/admin/ui/replay\"><input type=\"hidden\" name=\"{field}\" value=\"{v}\">{back}\
         <button class=\"replay\" data-{field}=\"{v}\">{label}</button></form>",
        v = esc(value)
    )
}

/// A job's record as a link when it is an instance.
fn record_link(collection: Collection, id: &str) -> String {
    let label = format!("{}/{}", collection.as_str(), esc(id));
    if collection == Collection::BotInstances && valid_record_id(id) {
        format!("<a href=\"/admin/ui/instances/{}\"><code>{label}</code></a>", esc(id))
    } else {
        format!("<code>{label}</code>")
    }
}

pub fn failed_jobs(jobs: &[JobRow]) -> String {
    let mut b = format!(
        "<h2>Failed and waiting jobs ({})</h2><table id=\"failed-jobs\"><tr><th>job</th><th>record</th><th>state</th>\
         <th>attempts</th><th>reason</th><th></th></tr>",
        jobs.len()
    );
    for j in jobs {
        let record = format!("{}/{}", j.collection.as_str(), j.record_id);
        let button = if valid_record_id(&j.record_id) {
            replay_button("record", &record, None, "Replay")
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"reason\">{}</td><td>{button}</td></tr>",
            j.id,
            record_link(j.collection, &j.record_id),
            j.state.as_str(),
            j.state.as_str(),
            j.attempts,
            esc(j.last_error.as_deref().unwrap_or(""))
        );
    }
    b.push_str("</table>");
    b
}

/// Why a failed event failed: its job's last error (the job may have been retried since).
fn event_reason(e: &EventRow, jobs: &HashMap<i64, JobRow>) -> String {
    if e.status != EventStatus::Failed {
        return String::new();
    }
    match e.job_id.and_then(|id| jobs.get(&id)) {
        Some(j) => match &j.last_error {
            Some(err) => esc(err),
            None => format!("job {} is {} now", j.id, j.state.as_str()),
        },
        None => "its job is gone (pruned)".into(),
    }
}

pub fn events_table(events: &[EventRow], jobs: &HashMap<i64, JobRow>, back: Option<&str>) -> String {
    let mut b = String::from(
        "<table id=\"events\"><tr><th>id</th><th>received</th><th>source</th><th>record</th><th>action</th>\
         <th>status</th><th>reason</th><th></th></tr>",
    );
    for e in events {
        let _ = write!(
            b,
            "<tr id=\"event-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td>\
             <td class=\"reason\">{}</td><td>{}</td></tr>",
            e.id,
            e.id,
            when_ms(e.received_at),
            e.source.as_str(),
            record_link(e.collection, &e.record_id),
            e.action.as_str(),
            e.status.as_str(),
            e.status.as_str(),
            event_reason(e, jobs),
            replay_button("event", &e.id.to_string(), back, "Replay")
        );
    }
    b.push_str("</table>");
    b
}

/// What an instance's timeline holds besides its events.
pub struct History<'a> {
    pub events: &'a [EventRow],
    pub jobs: &'a [JobRow],
    pub attempts: &'a [AttemptRow],
    pub logs: &'a [DeployLog],
    pub pending_logs: &'a [OutboxEntry],
    pub intents: &'a [Intent],
    pub calls: &'a [CoolifyCall],
}

struct Entry {
    at: i64,
    kind: &'static str,
    what: String,
    reason: String,
    action: String,
}

/// Everything the bridge knows happened to an instance, newest first.
pub fn timeline(id: &str, h: &History<'_>) -> String {
    let jobs: HashMap<i64, JobRow> = h.jobs.iter().map(|j| (j.id, j.clone())).collect();
    let mut entries: Vec<Entry> = Vec::new();
    for e in h.events {
        entries.push(Entry {
            at: e.received_at,
            kind: "event",
            what: format!(
                "event {} from {}: {} <span class=\"{}\">{}</span>",
                e.id,
                e.source.as_str(),
                e.action.as_str(),
                e.status.as_str(),
                e.status.as_str()
            ),
            reason: event_reason(e, &jobs),
            action: replay_button("event", &e.id.to_string(), Some(id), "Replay"),
        });
    }
    for j in h.jobs {
        entries.push(Entry {
            at: j.updated_at,
            kind: "job",
            what: format!(
                "job {} <span class=\"{}\">{}</span> after {} attempt(s)",
                j.id,
                j.state.as_str(),
                j.state.as_str(),
                j.attempts
            ),
            reason: esc(j.last_error.as_deref().unwrap_or("")),
            action: replay_button("record", &format!("bot_instances/{id}"), Some(id), "Restart job"),
        });
    }
    for a in h.attempts {
        let outcome = a.outcome.map(|o| o.as_str()).unwrap_or("running");
        entries.push(Entry {
            at: a.started_at,
            kind: "attempt",
            what: format!(
                "attempt {} of job {}: <span class=\"{outcome}\">{outcome}</span>{}",
                a.id,
                a.job_id,
                a.duration_ms.map(|d| format!(" in {d} ms")).unwrap_or_default()
            ),
            reason: esc(a.error.as_deref().unwrap_or("")),
            action: String::new(),
        });
    }
    for i in h.intents {
        entries.push(Entry {
            at: i.updated_at,
            kind: "coolify",
            what: format!(
                "{} <code>{}</code>: {}",
                esc(&i.kind),
                esc(&i.name),
                match &i.coolify_uuid {
                    Some(u) => format!("Coolify uuid <code>{}</code>", esc(u)),
                    None => "asked for, not confirmed by Coolify yet".into(),
                }
            ),
            reason: String::new(),
            action: String::new(),
        });
    }
    for c in h.calls {
        let (class, outcome) = match (c.status, c.error) {
            (Some(s), None) if s < 400 => ("succeeded", s.to_string()),
            (Some(s), e) => ("failed", e.map(|e| format!("{s} {e}")).unwrap_or_else(|| s.to_string())),
            (None, e) => ("failed", e.unwrap_or("transport").to_string()),
        };
        entries.push(Entry {
            at: c.at,
            kind: "coolify-call",
            what: format!(
                "<code>{}</code> <span class=\"{class}\">{}</span> in {} ms (job {})",
                esc(c.route),
                esc(&outcome),
                c.duration_ms,
                c.job_id
            ),
            reason: String::new(),
            action: String::new(),
        });
    }
    for l in h.logs {
        let actor = match &l.triggered_by_user {
            Some(u) => format!("{} ({})", esc(&l.triggered_by), esc(u)),
            None => esc(&l.triggered_by),
        };
        entries.push(Entry {
            at: l.created.map(|t| t.timestamp_millis()).unwrap_or(0),
            kind: "deploy_log",
            what: format!(
                "{} <span class=\"{}\">{}</span> by {actor}",
                sel(&l.action),
                sel(&l.status),
                sel(&l.status)
            ),
            reason: esc(&l.message),
            action: String::new(),
        });
    }
    for o in h.pending_logs {
        entries.push(Entry {
            at: o.created_at,
            kind: "write-back",
            what: format!(
                "deploy_logs row <code>{}</code> not yet confirmed by PocketBase",
                esc(&o.id)
            ),
            reason: String::new(),
            action: String::new(),
        });
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.at));
    let mut b =
        String::from("<table id=\"timeline\"><tr><th>when</th><th>kind</th><th>what</th><th>reason</th><th></th></tr>");
    for e in &entries {
        let _ = write!(
            b,
            "<tr class=\"t-{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td><td>{}</td></tr>",
            e.kind,
            when_ms(e.at),
            e.kind,
            e.what,
            e.reason,
            e.action
        );
    }
    b.push_str("</table>");
    b
}

/// The instance's summary at the top of its page.
pub fn instance_summary(
    i: &BotInstance,
    tenant: Option<&Tenant>,
    template: Option<&str>,
    health: Option<&LiveHealth>,
) -> String {
    let field = |k: &str, v: String| format!("<tr><th>{k}</th><td>{v}</td></tr>");
    [
        field("id", format!("<code>{}</code>", esc(&i.id))),
        field("tenant", tenant_cell(tenant, &i.tenant)),
        field("template", esc(template.unwrap_or(&i.template))),
        field("domain", text(&i.domain)),
        field("template version", text(&i.template_version)),
        field("desired", sel(&i.desired_state)),
        field(
            "status",
            format!(
                "<span id=\"status\" class=\"{}\">{}</span>",
                sel(&i.status),
                sel(&i.status)
            ),
        ),
        field("reason", reason(i)),
        field("live health", health_cell(health)),
        field("last healthy", when(&i.last_healthy_at)),
        field(
            "Coolify service",
            format!("<code>{}</code>", text(&i.coolify_service_id)),
        ),
        field("changed by", format!("<code>{}</code>", text(&i.changed_by))),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    fn hostile_instance() -> BotInstance {
        serde_json::from_value(serde_json::json!({
            "id": "abc123",
            "tenant": "t1",
            "name": "<img src=x onerror=alert(1)>",
            "domain": "\"><script>alert(2)</script>",
            "status": "pending",
            "pending_reason": "<b>secrets</b>",
            "changed_by": "users:'x'",
        }))
        .expect("instance")
    }

    #[test]
    fn tenant_input_never_becomes_markup() {
        let tenant: Tenant = serde_json::from_value(serde_json::json!({
            "id": "t1", "slug": "<svg onload=alert(3)>", "status": "suspended"
        }))
        .expect("tenant");
        let row = instance_row(&hostile_instance(), Some(&tenant), None);
        for raw in ["<img", "<script", "<svg", "<b>", "'x'"] {
            assert!(!row.contains(raw), "{raw} reached the page: {row}");
        }
        assert!(row.contains("&lt;img src=x onerror=alert(1)&gt;"), "{row}");
        assert!(row.contains("waiting: &lt;b&gt;secrets&lt;/b&gt;"), "{row}");
        assert!(row.contains("(suspended)"), "{row}");
        let summary = instance_summary(&hostile_instance(), Some(&tenant), Some("<i>t</i>"), None);
        assert!(
            !summary.contains("<script") && !summary.contains("<svg") && !summary.contains("<i>"),
            "{summary}"
        );
    }
}
