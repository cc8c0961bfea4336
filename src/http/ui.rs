//! Operator page at `/admin/ui`: server-rendered HTML (markup in `views`, pictures in `charts`) and one
//! small inline script (`ui.js`) that follows `/admin/ui/stream` and re-fetches only what a change
//! touches. Signing in with the admin token starts a server-side session (an HttpOnly, SameSite=Strict
//! cookie, Secure over HTTPS, see `auth`); without one every page answers 401 with the sign-in form.
//! Messages after an action live in the session, never in the URL. Nothing is loaded from elsewhere: the
//! page works offline.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::{AdminToken, Sessions, is_operator};
use super::charts;
use super::glance::Glance;
use super::operator::{AdminState, ReplayRequest, replay};
use super::rollout_panel::{self, TemplateVersions};
use super::rollouts::refusal;
use super::views::{self, esc, sel, text};
use crate::events::{Collection, Source, valid_record_id};
use crate::journal::{DeletionState, EventFilter, JobRow, JobState};
use crate::pocketbase::records::{InstanceStatus, Tenant};
use crate::reconcile::context::{project_intent_key, service_intent_key};
use crate::reconcile::restore::{self, Answer};
use crate::rollout::{self, MAX_BATCH, Request};

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin-bottom:2rem;width:100%}\
th,td{border-bottom:1px solid #ddd;padding:.35rem .6rem;text-align:left;font-size:.9rem;vertical-align:top}th{background:#f4f4f4}\
.running,.healthy,.succeeded,.done,.success{color:#176f2c}.error,.failed,.dead,.unhealthy,.missing{color:#b00020}\
.pending,.deploying,.waiting,.queued,.suspect,.retry{color:#8a5a00}.muted{color:#888}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}button{cursor:pointer}code{font-size:.85rem}\
form{display:inline}.glance{display:flex;gap:1rem;flex-wrap:wrap}.filters label{margin-right:1rem}\
tr.changed td{background:#fffbe0}#live{font-size:.8rem;margin-left:1rem}";

const SCRIPT: &str = include_str!("ui.js");

fn hash(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

/// The page's Content-Security-Policy: nothing runs or loads but the inline style and script (by their
/// hashes), the script talks only to the bridge, forms post only to the bridge, and no other site may
/// frame it.
pub fn content_security_policy() -> String {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            hash(STYLE),
            hash(SCRIPT)
        )
    });
    CSP.clone()
}

/// A page; `live` names what the script follows (`dashboard`, or `instance` with its id).
fn page(title: &str, body: &str, live: Option<(&str, &str)>) -> String {
    let (attrs, script) = match live {
        Some((kind, instance)) => (
            format!(" data-page=\"{}\" data-instance=\"{}\"", esc(kind), esc(instance)),
            format!("<script>{SCRIPT}</script>"),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\
         <body{attrs}>{body}{script}</body></html>",
        esc(title)
    )
}

fn html(status: actix_web::http::StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

fn login_page(message: Option<&str>) -> String {
    let note = message
        .map(|m| format!("<p class=\"error\">{}</p>", esc(m)))
        .unwrap_or_default();
    page(
        "cf-bridge: sign in",
        &format!(
            "<h1>cf-bridge operator page</h1>{note}<form method=\"post\" action=\"/admin/ui/login\">\
             <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\"></label> \
             <button type=\"submit\" id=\"login\">Sign in</button></form>"
        ),
        None,
    )
}

pub(super) fn unauthorized() -> HttpResponse {
    html(actix_web::http::StatusCode::UNAUTHORIZED, login_page(None))
}

fn bad_request(message: &str) -> HttpResponse {
    html(
        actix_web::http::StatusCode::BAD_REQUEST,
        page(
            "bad request",
            &format!(
                "<p class=\"error\">{}</p><p><a href=\"/admin/ui\">back</a></p>",
                esc(message)
            ),
            None,
        ),
    )
}

fn unavailable(message: &str) -> HttpResponse {
    html(
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
        page("cf-bridge", &format!("<p class=\"error\">{}</p>", esc(message)), None),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

#[post("/admin/ui/login")]
async fn login(
    token: web::Data<AdminToken>,
    sessions: web::Data<Sessions>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    if !token.matches_token(form.token.trim()) {
        return html(
            actix_web::http::StatusCode::UNAUTHORIZED,
            login_page(Some("That token is not valid.")),
        );
    }
    HttpResponse::SeeOther()
        .cookie(sessions.create())
        .insert_header((header::LOCATION, "/admin/ui"))
        .finish()
}

/// Ends the session on the server, not only in the browser: a copied cookie dies with it.
#[post("/admin/ui/logout")]
async fn logout(req: HttpRequest, sessions: web::Data<Sessions>) -> HttpResponse {
    HttpResponse::SeeOther()
        .cookie(sessions.end(&req))
        .insert_header((header::LOCATION, "/admin/ui"))
        .finish()
}

/// Replays a record (`record`, the job's restart) or one event (`event`); `back` names the instance page
/// to return to.
#[derive(Deserialize)]
struct ReplayForm {
    record: Option<String>,
    event: Option<i64>,
    back: Option<String>,
}

#[post("/admin/ui/replay")]
async fn replay_form(
    req: HttpRequest,
    state: web::Data<AdminState>,
    sessions: web::Data<Sessions>,
    form: Option<web::Form<ReplayForm>>,
) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    let Some(web::Form(form)) = form else {
        return bad_request("missing record or event");
    };
    let what = match (&form.record, form.event) {
        (Some(r), None) => r.clone(),
        (None, Some(e)) => format!("event {e}"),
        _ => return bad_request("give a record or an event"),
    };
    let result = replay(
        &state,
        ReplayRequest {
            event_ids: form.event.map(|e| vec![e]),
            record: form.record.clone(),
            since: None,
            failed: None,
        },
    )
    .await;
    let flash = match result {
        Ok(n) => format!("replayed {what} ({n} job enqueued)"),
        Err(e) => format!("replay of {what} failed: {e}"),
    };
    sessions.set_flash(&req, flash);
    let back = match form.back.as_deref() {
        Some(id) if valid_record_id(id) => format!("/admin/ui/instances/{id}"),
        _ => "/admin/ui".into(),
    };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, back))
        .finish()
}

/// Restores or purges a deleted instance (`op`) from its page, through the same operations as the admin
/// API's `/admin/instances/{id}/restore` and `/purge`.
#[derive(Deserialize)]
struct LifecycleForm {
    id: String,
    op: String,
}

#[post("/admin/ui/lifecycle")]
async fn lifecycle_form(
    req: HttpRequest,
    state: web::Data<AdminState>,
    sessions: web::Data<Sessions>,
    form: Option<web::Form<LifecycleForm>>,
) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    let Some(web::Form(form)) = form else {
        return bad_request("missing id or op");
    };
    if !valid_record_id(&form.id) {
        return bad_request("id is not a record id");
    }
    let outcome = match form.op.as_str() {
        "restore" => restore::restore(&state.ctx, &form.id).await,
        "purge" => restore::purge(&state.ctx, &form.id).await,
        _ => return bad_request("op must be restore or purge"),
    };
    let flash = match outcome {
        Ok(Answer::Done(_)) => format!("{} of {} started", form.op, form.id),
        Ok(Answer::Refused(why)) => format!("{} refused: {why}", form.op),
        Err(e) => format!("{} failed: {e}", form.op),
    };
    sessions.set_flash(&req, flash);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/admin/ui/instances/{}", form.id)))
        .finish()
}

/// Starts a rollout of `template` (`op=rollout`, with the optional `to`, `batch` and `tenant` slug; empty
/// means the default) or rolls its latest one back (`op=rollback`), through the same operations as the
/// admin API's `/admin/templates/{name}/rollout` and `/rollback`.
#[derive(Deserialize)]
struct RolloutForm {
    template: String,
    op: String,
    to: Option<String>,
    batch: Option<String>,
    tenant: Option<String>,
}

#[post("/admin/ui/rollout")]
async fn rollout_form(
    req: HttpRequest,
    state: web::Data<AdminState>,
    sessions: web::Data<Sessions>,
    form: Option<web::Form<RolloutForm>>,
) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    let Some(web::Form(form)) = form else {
        return bad_request("missing template or op");
    };
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
    let template = form.template.trim();
    if template.is_empty() {
        return bad_request("template is empty");
    }
    let outcome = match form.op.as_str() {
        "rollout" => match given(&form.batch).map(|b| b.parse::<usize>()).transpose() {
            Ok(batch) => {
                let request = Request {
                    to: given(&form.to),
                    batch,
                    tenant: given(&form.tenant),
                };
                Some(rollout::start(&state.ctx, &state.rollouts, template, request).await)
            }
            Err(_) => None,
        },
        "rollback" => Some(rollout::rollback(&state.ctx, &state.rollouts, template).await),
        _ => return bad_request("op must be rollout or rollback"),
    };
    let flash = match outcome {
        Some(Ok(r)) => format!(
            "{} {} of template {} started: {} instances in {} batches",
            form.op,
            r.id,
            r.template,
            r.items.len(),
            r.batches_total()
        ),
        Some(Err(e)) => format!("{} of template {template} refused: {}", form.op, refusal(e).1),
        None => format!(
            "{} of template {template} refused: batch must be between 1 and {MAX_BATCH}",
            form.op
        ),
    };
    sessions.set_flash(&req, flash);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/admin/ui"))
        .finish()
}

/// The page's filters; empty values (an untouched select) mean no filter.
#[derive(Debug, Default, Deserialize)]
struct Filters {
    tenant: Option<String>,
    status: Option<String>,
    source: Option<String>,
}

/// Validated filters.
#[derive(Debug, Default)]
struct Chosen {
    tenant: Option<String>,
    status: Option<InstanceStatus>,
    source: Option<Source>,
}

impl Filters {
    fn validate(&self) -> Result<Chosen, String> {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned);
        let tenant = given(&self.tenant);
        if let Some(t) = &tenant
            && !valid_record_id(t)
        {
            return Err(format!("tenant {t:?} is not a record id"));
        }
        let status = given(&self.status)
            .map(|s| {
                serde_json::from_value::<InstanceStatus>(serde_json::Value::String(s.clone()))
                    .map_err(|_| format!("unknown instance status {s:?}"))
            })
            .transpose()?;
        let source = given(&self.source)
            .map(|s| s.parse::<Source>().map_err(|_| format!("unknown event source {s:?}")))
            .transpose()?;
        Ok(Chosen { tenant, status, source })
    }
}

impl Chosen {
    fn shows(&self, i: &crate::pocketbase::records::BotInstance) -> bool {
        self.tenant.as_ref().is_none_or(|t| *t == i.tenant) && self.status.is_none_or(|s| i.status == Some(s))
    }
}

fn option(value: &str, label: &str, chosen: bool) -> String {
    format!(
        "<option value=\"{}\"{}>{}</option>",
        esc(value),
        if chosen { " selected" } else { "" },
        esc(label)
    )
}

fn filter_form(tenants: &[Tenant], chosen: &Chosen) -> String {
    let mut tenant_opts = option("", "all tenants", chosen.tenant.is_none());
    for t in tenants {
        tenant_opts.push_str(&option(&t.id, &t.slug, chosen.tenant.as_deref() == Some(t.id.as_str())));
    }
    let mut status_opts = option("", "any status", chosen.status.is_none());
    for s in ["pending", "deploying", "running", "stopped", "error"] {
        let is = chosen.status.is_some_and(|c| sel(&Some(c)) == s);
        status_opts.push_str(&option(s, s, is));
    }
    let mut source_opts = option("", "any source", chosen.source.is_none());
    for s in Source::ALL {
        source_opts.push_str(&option(s.as_str(), s.as_str(), chosen.source == Some(*s)));
    }
    format!(
        "<form method=\"get\" action=\"/admin/ui\" class=\"filters\" id=\"filters\">\
         <label>tenant <select name=\"tenant\">{tenant_opts}</select></label>\
         <label>status <select name=\"status\">{status_opts}</select></label>\
         <label>event source <select name=\"source\">{source_opts}</select></label>\
         <button type=\"submit\">Filter</button> <a href=\"/admin/ui\">clear</a></form>"
    )
}

#[get("/admin/ui")]
async fn dashboard(
    req: HttpRequest,
    state: web::Data<AdminState>,
    glance: web::Data<Glance>,
    sessions: web::Data<Sessions>,
    filters: Option<web::Query<Filters>>,
) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    let Some(filters) = filters else {
        return bad_request("the filters are tenant, status and source");
    };
    let chosen = match filters.validate() {
        Ok(c) => c,
        Err(e) => return bad_request(&e),
    };
    let flash = sessions.take_flash(&req);
    match render_dashboard(&state, &glance, &chosen, flash.as_deref()).await {
        Ok(body) => html(actix_web::http::StatusCode::OK, body),
        Err(e) => unavailable(&e),
    }
}

async fn render_dashboard(
    state: &AdminState,
    glance: &Glance,
    chosen: &Chosen,
    flash: Option<&str>,
) -> Result<String, String> {
    let ctx = &state.ctx;
    let tenants = ctx.pb.list_tenants().await.map_err(|e| e.to_string())?;
    let instances = ctx.pb.list_instances(None).await.map_err(|e| e.to_string())?;
    let by_id: HashMap<&str, &Tenant> = tenants.iter().map(|t| (t.id.as_str(), t)).collect();

    let mut b = String::new();
    b.push_str(
        "<h1>cf-bridge</h1><p><span id=\"live\" class=\"muted\">connecting</span></p>\
         <div><form method=\"post\" action=\"/admin/ui/logout\"><button>Sign out</button></form></div>",
    );
    if let Some(f) = flash {
        let _ = write!(b, "<p id=\"flash\"><strong>{}</strong></p>", esc(f));
    }
    b.push_str(&filter_form(&tenants, chosen));
    let _ = write!(
        b,
        "<h2>Tenants ({})</h2><table id=\"tenants\"><tr><th>id</th><th>slug</th><th>status</th><th>plan</th>\
         <th>Coolify project</th><th>bridge error</th></tr>",
        tenants.len()
    );
    for t in &tenants {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td><code>{}</code></td>\
             <td class=\"reason\">{}</td></tr>",
            esc(&t.id),
            esc(&t.slug),
            sel(&t.status),
            sel(&t.status),
            sel(&t.plan_tier),
            text(&t.coolify_project_uuid),
            text(&t.bridge_error)
        );
    }
    let shown: Vec<_> = instances.iter().filter(|i| chosen.shows(i)).collect();
    let _ = write!(
        b,
        "</table><h2>Instances (<span id=\"instances-shown\">{}</span> shown of {})</h2>\
         <table id=\"instances\"><thead>{}</thead><tbody>",
        shown.len(),
        instances.len(),
        views::INSTANCES_HEAD
    );
    for i in shown {
        let live = ctx.health.live(&i.id);
        b.push_str(&views::instance_row(
            i,
            by_id.get(i.tenant.as_str()).copied(),
            live.as_ref(),
        ));
    }
    b.push_str("</tbody></table><div id=\"panels\">");
    b.push_str(&render_panels(state, glance, chosen.source).await?);
    b.push_str("</div>");
    Ok(page("cf-bridge", &b, Some(("dashboard", ""))))
}

/// The at-a-glance pictures, the failed jobs and the recent events: all from the journal and memory, so
/// the page can refresh them on every change without asking PocketBase.
async fn render_panels(state: &AdminState, glance: &Glance, source: Option<Source>) -> Result<String, String> {
    let journal = &state.ctx.journal;
    let samples = glance.samples().await;
    let jobs = journal
        .list_jobs(&[JobState::Failed, JobState::Waiting, JobState::Dead], 100)
        .await
        .map_err(|e| e.to_string())?;
    let filter = EventFilter {
        source,
        ..EventFilter::default()
    };
    let (events, _) = journal.list_events(filter, None, 30).await.map_err(|e| e.to_string())?;
    let event_jobs = jobs_of(state, &events).await?;
    let mut b = String::from("<h2>At a glance</h2><div class=\"glance\">");
    b.push_str(&charts::budget(&samples, glance.budget));
    b.push_str(&charts::jobs(&samples));
    b.push_str(&charts::health(&samples));
    b.push_str("</div>");
    b.push_str(&views::failed_jobs(&jobs));
    b.push_str("<h2>Recent events</h2>");
    b.push_str(&views::events_table(&events, &event_jobs, None));
    b.push_str(&templates_panel(state).await?);
    Ok(b)
}

/// Rollouts shown on the page.
const RECENT_ROLLOUTS: usize = 10;

/// The templates (from memory) and the recent rollouts (from the journal).
async fn templates_panel(state: &AdminState) -> Result<String, String> {
    let ctx = &state.ctx;
    let mut templates: Vec<TemplateVersions> = ctx
        .templates
        .iter()
        .map(|t| TemplateVersions {
            name: t.name.clone(),
            newest: t.version.clone(),
            kept: ctx
                .templates
                .versions_of(&t.name)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        })
        .collect();
    templates.sort_by(|a, b| a.name.cmp(&b.name));
    let rollouts = rollout::recent(ctx, RECENT_ROLLOUTS).await.map_err(|e| refusal(e).1)?;
    Ok(rollout_panel::panel(&templates, &rollouts))
}

/// The jobs of the failed events among `events`, for their reasons.
async fn jobs_of(state: &AdminState, events: &[crate::journal::EventRow]) -> Result<HashMap<i64, JobRow>, String> {
    let ids: Vec<i64> = events
        .iter()
        .filter(|e| e.status == crate::journal::EventStatus::Failed)
        .filter_map(|e| e.job_id)
        .collect();
    let jobs = state.ctx.journal.jobs_by_id(&ids).await.map_err(|e| e.to_string())?;
    Ok(jobs.into_iter().map(|j| (j.id, j)).collect())
}

#[get("/admin/ui/panels")]
async fn panels(
    req: HttpRequest,
    state: web::Data<AdminState>,
    glance: web::Data<Glance>,
    filters: Option<web::Query<Filters>>,
) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    let chosen = match filters.map(|f| f.validate()) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return bad_request(&e),
        None => return bad_request("the filters are tenant, status and source"),
    };
    match render_panels(&state, &glance, chosen.source).await {
        Ok(body) => html(actix_web::http::StatusCode::OK, body),
        Err(e) => unavailable(&e),
    }
}

/// One instance's row (one PocketBase request, with its tenant), for the page to replace after a change;
/// 204 when the filters hide it or it is gone.
#[get("/admin/ui/instances/{id}/row")]
async fn instance_row(
    req: HttpRequest,
    state: web::Data<AdminState>,
    id: web::Path<String>,
    filters: Option<web::Query<Filters>>,
) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    if !valid_record_id(&id) {
        return bad_request("not a record id");
    }
    let chosen = match filters.map(|f| f.validate()) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return bad_request(&e),
        None => return bad_request("the filters are tenant, status and source"),
    };
    match state.ctx.pb.get_instance_with_relations(&id).await {
        Ok(Some((i, tenant, _))) if chosen.shows(&i) => {
            let live = state.ctx.health.live(&i.id);
            html(
                actix_web::http::StatusCode::OK,
                views::instance_row(&i, tenant.as_ref(), live.as_ref()),
            )
        }
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(e) => unavailable(&e.to_string()),
    }
}

#[derive(Deserialize)]
struct InstanceQuery {
    fragment: Option<u8>,
}

/// An instance's page: its state and its timeline. Reads the instance (with its tenant) and its
/// `deploy_logs` from PocketBase, one request each, only when asked.
#[get("/admin/ui/instances/{id}")]
async fn instance_page(
    req: HttpRequest,
    state: web::Data<AdminState>,
    sessions: web::Data<Sessions>,
    id: web::Path<String>,
    q: Option<web::Query<InstanceQuery>>,
) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    if !valid_record_id(&id) {
        return bad_request("not a record id");
    }
    let fragment = q.is_some_and(|q| q.fragment == Some(1));
    match render_instance(&state, &id).await {
        Ok(Some(timeline)) if fragment => html(actix_web::http::StatusCode::OK, timeline),
        Ok(Some(timeline)) => {
            let flash = sessions
                .take_flash(&req)
                .map(|f| format!("<p id=\"flash\"><strong>{}</strong></p>", esc(&f)))
                .unwrap_or_default();
            let body = format!(
                "<p><a href=\"/admin/ui\">&larr; all instances</a><span id=\"live\" class=\"muted\">connecting</span></p>\
                 {flash}<div id=\"timeline-box\">{timeline}</div>"
            );
            html(
                actix_web::http::StatusCode::OK,
                page(&format!("cf-bridge: {id}"), &body, Some(("instance", &id))),
            )
        }
        Ok(None) => html(
            actix_web::http::StatusCode::NOT_FOUND,
            page(
                "not found",
                &format!("<p>No bot instance {}. <a href=\"/admin/ui\">back</a></p>", esc(&id)),
                None,
            ),
        ),
        Err(e) => unavailable(&e),
    }
}

/// The instance's page body; `None` when neither PocketBase nor the journal knows it. A record deleted
/// from PocketBase keeps its page as long as the journal remembers it.
async fn render_instance(state: &AdminState, id: &str) -> Result<Option<String>, String> {
    let ctx = &state.ctx;
    let record = ctx
        .pb
        .get_instance_with_relations(id)
        .await
        .map_err(|e| e.to_string())?;
    let journal = &ctx.journal;
    let filter = EventFilter {
        collection: Some(Collection::BotInstances),
        record_id: Some(id.to_owned()),
        ..EventFilter::default()
    };
    let (events, _) = journal
        .list_events(filter, None, 100)
        .await
        .map_err(|e| e.to_string())?;
    if record.is_none() && events.is_empty() {
        return Ok(None);
    }
    let logs = ctx.pb.recent_deploy_logs(id, 50).await.map_err(|e| e.to_string())?;
    let (jobs, attempts) = journal
        .record_jobs(Collection::BotInstances, id, 50)
        .await
        .map_err(|e| e.to_string())?;
    let pending_logs = journal
        .outbox_for(Collection::BotInstances, id, 50)
        .await
        .map_err(|e| e.to_string())?;
    let mut keys = vec![service_intent_key(id)];
    if let Some((inst, _, _)) = &record {
        keys.push(project_intent_key(&inst.tenant));
    }
    let mut intents = Vec::new();
    for key in keys {
        if let Some(i) = journal.get_intent(&key).await.map_err(|e| e.to_string())? {
            intents.push(i);
        }
    }
    let deletion = journal.deletion(id).await.map_err(|e| e.to_string())?;
    let live = ctx.health.live(id);
    let calls = ctx.coolify.calls_for(id);
    let history = views::History {
        events: &events,
        jobs: &jobs,
        attempts: &attempts,
        logs: &logs,
        pending_logs: &pending_logs,
        intents: &intents,
        calls: &calls,
    };
    let head = match &record {
        Some((inst, tenant, template)) => format!(
            "<h1>{}</h1><table id=\"summary\">{}</table>",
            esc(&inst.name),
            views::instance_summary(
                inst,
                tenant.as_ref(),
                template.as_ref().map(|t| t.name.as_str()),
                live.as_ref()
            )
        ),
        None => format!(
            "<h1><code>{}</code></h1><p id=\"gone\" class=\"error\">This instance is no longer in PocketBase; \
             the bridge's journal still has its history.</p>",
            esc(id)
        ),
    };
    Ok(Some(format!(
        "{head}{}{}<h2>Timeline</h2>{}",
        restart_button(id),
        deletion.map(|d| retention_buttons(id, &d)).unwrap_or_default(),
        views::timeline(id, &history)
    )))
}

/// The instance's restart (its job requeued with attempts reset), through the same replay as the API.
fn restart_button(id: &str) -> String {
    format!(
        "<form method=\"post\" action=\"/admin/ui/replay\"><input type=\"hidden\" name=\"record\" \
         value=\"bot_instances/{id}\"><input type=\"hidden\" name=\"back\" value=\"{id}\">\
         <button id=\"restart\">Restart job</button></form>",
        id = esc(id)
    )
}

/// A deleted instance kept for its retention: until when, and its restore (only a record still in
/// PocketBase can come back) and purge.
fn retention_buttons(id: &str, d: &crate::journal::Deletion) -> String {
    if d.state != DeletionState::Retained {
        return format!("<p id=\"deletion\">Deletion: {}</p>", esc(d.state.as_str()));
    }
    let until = chrono::DateTime::from_timestamp_millis(d.expires_at)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    let button = |op: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/admin/ui/lifecycle\"><input type=\"hidden\" name=\"id\" \
             value=\"{id}\"><input type=\"hidden\" name=\"op\" value=\"{op}\">\
             <button id=\"{op}\">{label}</button></form>",
            id = esc(id)
        )
    };
    let restore = if d.record_gone {
        String::new()
    } else {
        button("restore", "Restore")
    };
    format!(
        "<p id=\"deletion\">Deleted: its stopped service and data are kept until {}.</p>{restore}{}",
        esc(&until),
        button("purge", "Purge now")
    )
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login)
        .service(logout)
        .service(replay_form)
        .service(lifecycle_form)
        .service(rollout_form)
        .service(dashboard)
        .service(panels)
        .service(instance_row)
        .service(instance_page);
}
