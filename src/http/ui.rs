//! Operator page at `/admin/ui`: server-rendered HTML, no script, no build step. Signing in with the admin
//! token starts a server-side session (an HttpOnly, SameSite=Strict cookie, Secure over HTTPS, see
//! `auth`); without one every page answers 401 with the sign-in form. Messages after an action live in the
//! session, never in the URL.

use std::fmt::Write as _;
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::{AdminToken, Sessions, is_operator};
use super::operator::{AdminState, ReplayRequest, replay};
use crate::events::{Collection, valid_record_id};
use crate::journal::{EventFilter, JobState};

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

fn text(v: &Option<String>) -> String {
    esc(v.as_deref().unwrap_or(""))
}

/// A select value as PocketBase spells it.
fn sel<T: serde::Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|x| serde_json::to_value(x).ok())
        .and_then(|x| x.as_str().map(esc))
        .unwrap_or_default()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse;margin-bottom:2rem;width:100%}\
th,td{border-bottom:1px solid #ddd;padding:.35rem .6rem;text-align:left;font-size:.9rem}th{background:#f4f4f4}\
.running{color:#176f2c}.error,.failed,.dead{color:#b00020}.pending,.deploying,.waiting,.queued{color:#8a5a00}\
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}button{cursor:pointer}code{font-size:.85rem}";

/// The page's Content-Security-Policy: nothing loads but the inline style (by its hash), forms post only
/// to the bridge, and no other site may frame it.
pub fn content_security_policy() -> String {
    static CSP: LazyLock<String> = LazyLock::new(|| {
        let style = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        format!(
            "default-src 'none'; style-src 'sha256-{style}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    });
    CSP.clone()
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    )
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
    )
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .content_type("text/html; charset=utf-8")
        .body(login_page(None))
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
        return HttpResponse::Unauthorized()
            .content_type("text/html; charset=utf-8")
            .body(login_page(Some("That token is not valid.")));
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

#[derive(Deserialize)]
struct ReplayForm {
    record: String,
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
    let Some(form) = form else {
        return HttpResponse::BadRequest()
            .content_type("text/html; charset=utf-8")
            .body(page("bad request", "<p>missing record</p>"));
    };
    let result = replay(
        &state,
        ReplayRequest {
            event_ids: None,
            record: Some(form.record.clone()),
            since: None,
            failed: None,
        },
    )
    .await;
    let flash = match result {
        Ok(n) => format!("replayed {} ({n} job enqueued)", form.record),
        Err(e) => format!("replay of {} failed: {e}", form.record),
    };
    sessions.set_flash(&req, flash);
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/admin/ui"))
        .finish()
}

#[get("/admin/ui")]
async fn dashboard(req: HttpRequest, state: web::Data<AdminState>, sessions: web::Data<Sessions>) -> HttpResponse {
    if !is_operator(&req) {
        return unauthorized();
    }
    let flash = sessions.take_flash(&req);
    match render_dashboard(&state, flash.as_deref()).await {
        Ok(html) => HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html),
        Err(e) => HttpResponse::ServiceUnavailable()
            .content_type("text/html; charset=utf-8")
            .body(page("cf-bridge", &format!("<p class=\"error\">{}</p>", esc(&e)))),
    }
}

async fn render_dashboard(state: &AdminState, flash: Option<&str>) -> Result<String, String> {
    let ctx = &state.ctx;
    let tenants = ctx.pb.list_tenants().await.map_err(|e| e.to_string())?;
    let instances = ctx.pb.list_instances(None).await.map_err(|e| e.to_string())?;
    let (events, _) = state
        .ctx
        .journal
        .list_events(EventFilter::default(), None, 30)
        .await
        .map_err(|e| e.to_string())?;
    let jobs = state
        .ctx
        .journal
        .list_jobs(&[JobState::Failed, JobState::Waiting, JobState::Dead], 100)
        .await
        .map_err(|e| e.to_string())?;

    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>cf-bridge</h1><form method=\"post\" action=\"/admin/ui/logout\"><button>Sign out</button></form>"
    );
    if let Some(f) = flash {
        let _ = write!(b, "<p id=\"flash\"><strong>{}</strong></p>", esc(f));
    }
    let _ = write!(
        b,
        "<h2>Tenants ({})</h2><table><tr><th>id</th><th>slug</th><th>status</th><th>plan</th><th>Coolify project</th><th>bridge error</th></tr>",
        tenants.len()
    );
    for t in &tenants {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&t.id),
            esc(&t.slug),
            sel(&t.status),
            sel(&t.status),
            sel(&t.plan_tier),
            text(&t.coolify_project_uuid),
            text(&t.bridge_error)
        );
    }
    let _ = write!(
        b,
        "</table><h2>Instances ({})</h2><table><tr><th>id</th><th>name</th><th>domain</th><th>desired</th><th>status</th><th>Coolify service</th><th>error</th><th>waiting for</th><th>changed by</th></tr>",
        instances.len()
    );
    for i in &instances {
        let _ = write!(
            b,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&i.id),
            esc(&i.name),
            text(&i.domain),
            sel(&i.desired_state),
            sel(&i.status),
            sel(&i.status),
            text(&i.coolify_service_id),
            text(&i.error_message),
            text(&i.pending_reason),
            text(&i.changed_by)
        );
    }
    let _ = write!(
        b,
        "</table><h2>Failed jobs ({})</h2><table id=\"failed-jobs\"><tr><th>job</th><th>record</th><th>state</th><th>attempts</th><th>last error</th><th></th></tr>",
        jobs.len()
    );
    for j in &jobs {
        let record = format!("{}/{}", j.collection.as_str(), j.record_id);
        let replayable =
            matches!(j.collection, Collection::Tenants | Collection::BotInstances) && valid_record_id(&j.record_id);
        let button = if replayable {
            format!(
                "<form method=\"post\" action=\"/admin/ui/replay\"><input type=\"hidden\" name=\"record\" value=\"{}\"><button class=\"replay\" data-record=\"{}\">Replay</button></form>",
                esc(&record),
                esc(&record)
            )
        } else {
            String::new()
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{button}</td></tr>",
            j.id,
            esc(&record),
            j.state.as_str(),
            j.state.as_str(),
            j.attempts,
            esc(j.last_error.as_deref().unwrap_or(""))
        );
    }
    let _ = write!(
        b,
        "</table><h2>Recent events</h2><table><tr><th>id</th><th>received</th><th>source</th><th>record</th><th>action</th><th>status</th></tr>"
    );
    for e in &events {
        let when = chrono::DateTime::from_timestamp_millis(e.received_at)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}/{}</code></td><td>{}</td><td class=\"{}\">{}</td></tr>",
            e.id,
            esc(&when),
            e.source.as_str(),
            e.collection.as_str(),
            esc(&e.record_id),
            e.action.as_str(),
            e.status.as_str(),
            e.status.as_str()
        );
    }
    b.push_str("</table>");
    Ok(page("cf-bridge", &b))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login)
        .service(logout)
        .service(replay_form)
        .service(dashboard);
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }
}
