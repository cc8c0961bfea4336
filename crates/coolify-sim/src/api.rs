//! Endpoint handlers. Each takes the locked state and returns the reply Coolify would give.

use serde_json::{Map, Value, json};

use super::compose::{self, ComposeError};
use super::model::*;
use super::routes::{Action, Route};

#[derive(Debug, Clone)]
pub enum Body {
    Json(Value),
    Text { text: String, content_type: &'static str },
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Body,
    pub headers: Vec<(&'static str, String)>,
    /// The state changed (save it).
    pub mutated: bool,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Body::Json(body),
            headers: Vec::new(),
            mutated: false,
        }
    }

    pub fn message(status: u16, msg: &str) -> Self {
        Self::json(status, json!({ "message": msg }))
    }

    fn changed(mut self) -> Self {
        self.mutated = true;
        self
    }

    fn validation(errors: Value) -> Self {
        Self::json(422, json!({"message": "Validation failed.", "errors": errors}))
    }

    fn field_error(field: &str, msg: &str) -> Self {
        Self::validation(json!({ field: [msg] }))
    }
}

/// Timing knobs the handlers need.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub now_ms: u64,
    pub start_delay_ms: u64,
    pub running_delay_ms: u64,
    pub delete_delay_ms: u64,
}

type Obj = Map<String, Value>;

/// Coolify's `validateIncomingRequest()`: JSON content type, parseable, not empty.
pub fn parse_body(content_type: Option<&str>, raw: &[u8]) -> Result<Obj, Reply> {
    let invalid = |e: &str| Reply::json(400, json!({"message": "Invalid request.", "error": e}));
    if !content_type.is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json")) {
        return Err(invalid("Content-Type must be application/json."));
    }
    let v: Value = serde_json::from_slice(raw).map_err(|_| invalid("Invalid JSON."))?;
    match v {
        Value::Object(m) if m.is_empty() => Err(invalid("Empty JSON.")),
        Value::Object(m) => Ok(m),
        Value::Array(a) if a.is_empty() => Err(invalid("Empty JSON.")),
        _ => Err(invalid("Invalid JSON.")),
    }
}

fn reject_unknown(body: &Obj, allowed: &[&str]) -> Result<(), Reply> {
    let mut errors = Map::new();
    for k in body.keys() {
        if !allowed.contains(&k.as_str()) {
            errors.insert(k.clone(), json!(["This field is not allowed."]));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Reply::validation(Value::Object(errors)))
    }
}

fn opt_string(body: &Obj, field: &str, max: usize) -> Result<Option<String>, Reply> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(Reply::field_error(
            field,
            &format!("The {field} field must not be greater than {max} characters."),
        )),
        Some(_) => Err(Reply::field_error(
            field,
            &format!("The {field} field must be a string."),
        )),
    }
}

fn opt_bool(body: &Obj, field: &str) -> Result<Option<bool>, Reply> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(Reply::field_error(
            field,
            &format!("The {field} field must be true or false."),
        )),
    }
}

fn validate_project_name(name: &str) -> Result<(), Reply> {
    let n = name.chars().count();
    if n < 3 {
        return Err(Reply::field_error(
            "name",
            "The name field must be at least 3 characters.",
        ));
    }
    if n > 255 {
        return Err(Reply::field_error(
            "name",
            "The name field must not be greater than 255 characters.",
        ));
    }
    // ^[\p{L}\p{M}\p{N}\s\-_.@\/&()#,:+]+$ (alphanumeric covers L and N; M is rare in names).
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "-_.@/&()#,:+".contains(c))
    {
        return Err(Reply::field_error("name", "The name field format is invalid."));
    }
    Ok(())
}

/// `GET /services`: every service, in the model's order.
pub fn service_list<'a>(services: impl Iterator<Item = &'a ServiceRec>, now_ms: u64) -> Reply {
    Reply::json(200, Value::Array(services.map(|s| s.to_json(now_ms)).collect()))
}

pub fn handle(st: &mut SimState, ctx: Ctx, route: Route, body: Obj) -> Reply {
    st.purge(ctx.now_ms);
    match route {
        Route::Version => Reply {
            status: 200,
            body: Body::Text {
                text: "4.3.11".into(),
                content_type: "text/html; charset=UTF-8",
            },
            headers: Vec::new(),
            mutated: false,
        },
        Route::Team => Reply::json(
            200,
            json!({"id": 0, "name": "Root Team", "description": "The root team", "personal_team": false,
                   "show_boarding": false, "created_at": timestamp(0), "updated_at": timestamp(0)}),
        ),
        Route::Servers => Reply::json(200, Value::Array(st.servers.iter().map(ServerRec::to_json).collect())),
        Route::ListProjects => Reply::json(
            200,
            Value::Array(st.projects.values().map(ProjectRec::to_json).collect()),
        ),
        Route::CreateProject => create_project(st, ctx, &body),
        Route::GetProject(u) => match st.projects.get(&u) {
            None => Reply::message(404, "Project not found."),
            Some(p) => {
                let mut v = p.to_json();
                v["environments"] = Value::Array(p.environments.iter().map(EnvironmentRec::to_json).collect());
                Reply::json(200, v)
            }
        },
        Route::PatchProject(u) => patch_project(st, ctx, &u, &body),
        Route::DeleteProject(u) => {
            if !st.projects.contains_key(&u) {
                return Reply::message(404, "Project not found.");
            }
            if st.services.values().any(|s| s.project_uuid == u) {
                return Reply::message(400, "Project has resources, so it cannot be deleted.");
            }
            st.projects.remove(&u);
            Reply::message(200, "Project deleted.").changed()
        }
        Route::ListEnvironments(u) => match st.projects.get(&u) {
            None => Reply::message(404, "Project not found."),
            Some(p) => Reply::json(
                200,
                Value::Array(p.environments.iter().map(EnvironmentRec::to_json).collect()),
            ),
        },
        Route::CreateEnvironment(u) => create_environment(st, ctx, &u, &body),
        Route::GetEnvironment(u, e) => {
            if !st.projects.contains_key(&u) {
                return Reply::message(404, "Project not found.");
            }
            let Some(env) = st.environment(&u, &e) else {
                return Reply::message(404, "Environment not found.");
            };
            let mut v = env.to_json();
            let services: Vec<Value> = st
                .services
                .values()
                .filter(|s| s.environment_id == env.id)
                .map(|s| s.to_json(ctx.now_ms))
                .collect();
            for k in ["applications", "postgresqls", "redis", "mongodbs", "mysqls", "mariadbs"] {
                v[k] = json!([]);
            }
            v["services"] = Value::Array(services);
            Reply::json(200, v)
        }
        Route::ListServices => service_list(st.services.values(), ctx.now_ms),
        Route::CreateService => create_service(st, ctx, &body),
        Route::GetService(u) => match st.services.get(&u) {
            None => Reply::message(404, "Service not found."),
            Some(s) => Reply::json(200, s.to_json(ctx.now_ms)),
        },
        Route::PatchService(u) => patch_service(st, ctx, &u, &body),
        Route::DeleteService(u) => {
            if !st.queue_deletion(&u, ctx.now_ms + ctx.delete_delay_ms) {
                return Reply::message(404, "Service not found.");
            }
            st.purge(ctx.now_ms);
            Reply::message(200, "Service deletion request queued.").changed()
        }
        Route::ServiceAction(u, a) => service_action(st, ctx, &u, a),
        Route::Deploy(uuids) => deploy(st, ctx, &uuids),
        Route::ActionViaGet(_) | Route::DeployViaGet => {
            let mut r = Reply::message(405, "This endpoint has changed to a POST request.");
            r.headers.push(("Allow", "POST".into()));
            r
        }
        Route::ListEnvs(u) => match st.services.get(&u) {
            None => Reply::message(404, "Service not found."),
            Some(s) => Reply::json(200, Value::Array(s.envs.iter().map(EnvVarRec::to_json).collect())),
        },
        Route::CreateEnv(u) => env_write(st, ctx, &u, &body, EnvMode::Create),
        Route::PatchEnv(u) => env_write(st, ctx, &u, &body, EnvMode::Update),
        Route::BulkEnvs(u) => bulk_envs(st, ctx, &u, &body),
        Route::DeleteEnv(u, e) => {
            let Some(s) = st.services.get_mut(&u) else {
                return Reply::message(404, "Service not found.");
            };
            let before = s.envs.len();
            s.envs.retain(|v| v.uuid != e);
            if s.envs.len() == before {
                Reply::message(404, "Environment variable not found.")
            } else {
                Reply::message(200, "Environment variable deleted.").changed()
            }
        }
    }
}

fn create_project(st: &mut SimState, ctx: Ctx, body: &Obj) -> Reply {
    if let Err(r) = reject_unknown(body, &["name", "description"]) {
        return r;
    }
    let name = match opt_string(body, "name", 255) {
        Ok(Some(n)) => n,
        Ok(None) => return Reply::field_error("name", "The name field is required."),
        Err(r) => return r,
    };
    if let Err(r) = validate_project_name(&name) {
        return r;
    }
    let description = match opt_string(body, "description", 255) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let id = st.next_id();
    let env_id = st.next_id();
    let uuid = new_uuid();
    st.projects.insert(
        uuid.clone(),
        ProjectRec {
            id,
            uuid: uuid.clone(),
            name,
            description,
            environments: vec![EnvironmentRec {
                id: env_id,
                uuid: new_uuid(),
                name: "production".into(),
                project_id: id,
                created_ms: ctx.now_ms,
            }],
            created_ms: ctx.now_ms,
            updated_ms: ctx.now_ms,
        },
    );
    Reply::json(201, json!({ "uuid": uuid })).changed()
}

fn patch_project(st: &mut SimState, ctx: Ctx, uuid: &str, body: &Obj) -> Reply {
    if let Err(r) = reject_unknown(body, &["name", "description"]) {
        return r;
    }
    let (name, description) = match (opt_string(body, "name", 255), opt_string(body, "description", 255)) {
        (Ok(n), Ok(d)) => (n, d),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if let Some(n) = &name
        && let Err(r) = validate_project_name(n)
    {
        return r;
    }
    let Some(p) = st.projects.get_mut(uuid) else {
        return Reply::message(404, "Project not found.");
    };
    if let Some(n) = name {
        p.name = n;
    }
    if description.is_some() {
        p.description = description;
    }
    p.updated_ms = ctx.now_ms;
    Reply::json(
        201,
        json!({"uuid": p.uuid, "name": p.name, "description": p.description}),
    )
    .changed()
}

fn create_environment(st: &mut SimState, ctx: Ctx, uuid: &str, body: &Obj) -> Reply {
    if let Err(r) = reject_unknown(body, &["name"]) {
        return r;
    }
    let name = match opt_string(body, "name", 255) {
        Ok(Some(n)) if !n.trim().is_empty() => n,
        Ok(_) => return Reply::field_error("name", "The name field is required."),
        Err(r) => return r,
    };
    let id = st.next_id();
    let Some(p) = st.projects.get_mut(uuid) else {
        return Reply::message(404, "Project not found.");
    };
    if p.environments.iter().any(|e| e.name == name) {
        return Reply::message(409, "Environment with this name already exists.");
    }
    let env_uuid = new_uuid();
    p.environments.push(EnvironmentRec {
        id,
        uuid: env_uuid.clone(),
        name,
        project_id: p.id,
        created_ms: ctx.now_ms,
    });
    Reply::json(201, json!({ "uuid": env_uuid })).changed()
}

fn compose_error(e: ComposeError) -> Reply {
    match e {
        ComposeError::NotBase64 => {
            Reply::validation(json!({"docker_compose_raw": "The docker_compose_raw should be base64 encoded."}))
        }
        ComposeError::NotUtf8 => {
            Reply::validation(json!({"docker_compose_raw": "The docker_compose_raw should be valid UTF-8."}))
        }
        ComposeError::InvalidYaml(_) => Reply::message(500, "Server Error"),
        ComposeError::NoServices => Reply::validation(
            json!({"docker_compose_raw": ["Docker Compose file must contain a \"services\" section"]}),
        ),
        ComposeError::UnsafeServiceName(n) => {
            Reply::validation(json!({"docker_compose_raw": [format!("Invalid Docker Compose service name: {n}")]}))
        }
    }
}

/// Validates `urls` against the compose containers; returns (container name, fqdn) pairs.
fn parse_urls(urls: &Value, containers: &[compose::Container]) -> Result<Vec<(String, String)>, Reply> {
    let Value::Array(items) = urls else {
        return Err(Reply::field_error("urls", "The urls field must be an array."));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(Reply::field_error(&format!("urls.{i}"), "The item must be an object."));
        };
        for k in m.keys() {
            if k != "name" && k != "url" {
                return Err(Reply::field_error(
                    &format!("urls.{i}.{k}"),
                    "This field is not allowed.",
                ));
            }
        }
        let (Some(name), Some(url)) = (
            m.get("name").and_then(Value::as_str),
            m.get("url").and_then(Value::as_str),
        ) else {
            return Err(Reply::field_error(
                &format!("urls.{i}"),
                "Both name and url are required.",
            ));
        };
        if !containers.iter().any(|c| c.name == name && !c.is_database) {
            return Err(Reply::validation(json!([format!(
                "Service container with '{name}' not found."
            )])));
        }
        // As Coolify's applyServiceUrls: a blank url clears the container's domain.
        if url.trim().is_empty() {
            out.push((name.to_string(), String::new()));
            continue;
        }
        for piece in url.split(',') {
            if compose::url_host(piece).is_none() {
                return Err(Reply::validation(json!([format!("Invalid URL: {piece}")])));
            }
        }
        out.push((
            name.to_string(),
            url.split(',').map(str::trim).collect::<Vec<_>>().join(","),
        ));
    }
    Ok(out)
}

/// Domains already used by other services in the team.
fn conflicts(st: &SimState, urls: &[(String, String)], except: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, fqdn) in urls {
        for host in fqdn.split(',').filter_map(compose::url_host) {
            for s in st.users_of(&host, except) {
                out.push(json!({
                    "domain": host, "resource_name": s.name, "resource_uuid": s.uuid, "resource_type": "service",
                    "message": format!("Domain {host} is already in use by service '{}'", s.name),
                }));
            }
        }
    }
    out
}

fn conflict_reply(c: Vec<Value>) -> Reply {
    Reply::json(
        409,
        json!({
            "message": "Domain conflicts detected. Use force_domain_override=true to proceed.",
            "conflicts": c,
            "warning": "Using the same domain for multiple resources can cause routing conflicts and unpredictable behavior.",
        }),
    )
}

fn containers_from(
    parsed: &compose::Compose,
    urls: &[(String, String)],
    old: &[ContainerRec],
) -> (Vec<ContainerRec>, Vec<ContainerRec>) {
    let (mut apps, mut dbs) = (Vec::new(), Vec::new());
    for c in &parsed.containers {
        let previous = old.iter().find(|o| o.name == c.name);
        let rec = ContainerRec {
            uuid: previous.map(|p| p.uuid.clone()).unwrap_or_else(new_uuid),
            name: c.name.clone(),
            image: c.image.clone(),
            // A container named in `urls` gets that domain (none when blank); the others keep theirs.
            fqdn: match urls.iter().find(|(n, _)| *n == c.name) {
                Some((_, f)) if f.is_empty() => None,
                Some((_, f)) => Some(f.clone()),
                None => previous.and_then(|p| p.fqdn.clone()),
            },
            healthcheck: c.healthcheck,
        };
        if c.is_database { dbs.push(rec) } else { apps.push(rec) }
    }
    (apps, dbs)
}

fn add_env_refs(envs: &mut Vec<EnvVarRec>, parsed: &compose::Compose, now_ms: u64) {
    for r in &parsed.env_refs {
        if envs.iter().any(|e| e.key == r.key) {
            continue;
        }
        envs.push(EnvVarRec {
            uuid: new_uuid(),
            key: r.key.clone(),
            value: Some(r.default.clone().unwrap_or_default()),
            is_literal: false,
            is_multiline: false,
            is_shown_once: false,
            is_required: r.required,
            comment: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        });
    }
}

const CREATE_SERVICE_FIELDS: &[&str] = &[
    "type",
    "name",
    "description",
    "project_uuid",
    "environment_name",
    "environment_uuid",
    "server_uuid",
    "destination_uuid",
    "instant_deploy",
    "docker_compose_raw",
    "urls",
    "force_domain_override",
    "is_container_label_escape_enabled",
    "tags",
];

fn create_service(st: &mut SimState, ctx: Ctx, body: &Obj) -> Reply {
    if let Err(r) = reject_unknown(body, CREATE_SERVICE_FIELDS) {
        return r;
    }
    let mut missing = Map::new();
    for f in ["project_uuid", "server_uuid"] {
        if !body.get(f).is_some_and(Value::is_string) {
            missing.insert(
                f.into(),
                json!([format!("The {} field is required.", f.replace('_', " "))]),
            );
        }
    }
    if !missing.is_empty() {
        return Reply::validation(Value::Object(missing));
    }
    let text = |f: &str| body.get(f).and_then(Value::as_str).map(str::to_string);
    let (env_name, env_uuid) = (text("environment_name"), text("environment_uuid"));
    if env_name.is_none() && env_uuid.is_none() {
        return Reply::message(
            422,
            "You need to provide at least one of environment_name or environment_uuid.",
        );
    }
    let raw = text("docker_compose_raw");
    match (body.contains_key("type"), &raw) {
        (true, Some(_)) => {
            return Reply::message(
                422,
                "You cannot provide both service type and docker_compose_raw. Use one or the other.",
            );
        }
        (false, None) => return Reply::field_error("docker_compose_raw", "The docker_compose_raw field is required."),
        _ => {}
    }
    let name = match opt_string(body, "name", 255) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let description = match opt_string(body, "description", 255) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let (instant, force, escape) = match (
        opt_bool(body, "instant_deploy"),
        opt_bool(body, "force_domain_override"),
        opt_bool(body, "is_container_label_escape_enabled"),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a.unwrap_or(false), b.unwrap_or(false), c.unwrap_or(true)),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let project_uuid = text("project_uuid").unwrap_or_default();
    if !st.projects.contains_key(&project_uuid) {
        return Reply::message(404, "Project not found.");
    }
    let env = env_name
        .as_deref()
        .and_then(|n| st.environment(&project_uuid, n))
        .or_else(|| env_uuid.as_deref().and_then(|u| st.environment(&project_uuid, u)));
    let Some(env_id) = env.map(|e| e.id) else {
        return Reply::message(404, "Environment not found.");
    };
    let server_uuid = text("server_uuid").unwrap_or_default();
    let Some(server) = st.servers.iter().find(|s| s.uuid == server_uuid).cloned() else {
        return Reply::message(404, "Server not found.");
    };
    if body.contains_key("type") {
        return Reply::json(404, json!({"message": "Service not found.", "valid_service_types": []}));
    }
    let parsed = match compose::decode(raw.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return compose_error(e),
    };
    let urls = match body.get("urls") {
        None | Some(Value::Null) => Vec::new(),
        Some(u) => match parse_urls(u, &parsed.containers) {
            Ok(u) => u,
            Err(r) => return r,
        },
    };
    if !force {
        let c = conflicts(st, &urls, None);
        if !c.is_empty() {
            return conflict_reply(c);
        }
    }
    let tags = body
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let (applications, databases) = containers_from(&parsed, &urls, &[]);
    let mut envs = Vec::new();
    add_env_refs(&mut envs, &parsed, ctx.now_ms);
    let uuid = new_uuid();
    let rec = ServiceRec {
        id: st.next_id(),
        uuid: uuid.clone(),
        name: name.unwrap_or_else(|| format!("service-{}", &new_uuid()[..10])),
        description,
        project_uuid,
        environment_id: env_id,
        server_id: server.id,
        destination_id: server.destination_id,
        compose: parsed.yaml,
        applications,
        databases,
        tags,
        connect_to_docker_network: false,
        is_container_label_escape_enabled: escape,
        lifecycle: if instant { starting(ctx) } else { Lifecycle::Exited },
        forced_status: None,
        crashed: false,
        envs,
        created_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
        delete_at_ms: None,
    };
    let domains = rec.domains();
    st.insert_service(rec);
    Reply::json(201, json!({"uuid": uuid, "domains": domains})).changed()
}

const PATCH_SERVICE_FIELDS: &[&str] = &[
    "name",
    "description",
    "instant_deploy",
    "docker_compose_raw",
    "connect_to_docker_network",
    "urls",
    "force_domain_override",
    "is_container_label_escape_enabled",
];

fn patch_service(st: &mut SimState, ctx: Ctx, uuid: &str, body: &Obj) -> Reply {
    if let Err(r) = reject_unknown(body, PATCH_SERVICE_FIELDS) {
        return r;
    }
    let (name, description) = match (opt_string(body, "name", 255), opt_string(body, "description", 255)) {
        (Ok(n), Ok(d)) => (n, d),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let flags = [
        "instant_deploy",
        "force_domain_override",
        "connect_to_docker_network",
        "is_container_label_escape_enabled",
    ]
    .map(|f| opt_bool(body, f));
    if let Some(Err(r)) = flags.iter().find(|f| f.is_err()) {
        return r.clone();
    }
    let [instant, force, connect, escape] = flags.map(|f| f.ok().flatten());
    let Some(current) = st.services.get(uuid) else {
        return Reply::message(404, "Service not found.");
    };
    let parsed = match body.get("docker_compose_raw").and_then(Value::as_str) {
        Some(raw) => match compose::decode(raw) {
            Ok(p) => p,
            Err(e) => return compose_error(e),
        },
        None => match compose::parse(&current.compose) {
            Ok(p) => p,
            Err(e) => return compose_error(e),
        },
    };
    let urls = match body.get("urls") {
        None | Some(Value::Null) => Vec::new(),
        Some(u) => match parse_urls(u, &parsed.containers) {
            Ok(u) => u,
            Err(r) => return r,
        },
    };
    if !force.unwrap_or(false) {
        let c = conflicts(st, &urls, Some(uuid));
        if !c.is_empty() {
            return conflict_reply(c);
        }
    }
    let edited = st.edit_service(uuid, |s| {
        let old: Vec<ContainerRec> = s.applications.iter().chain(&s.databases).cloned().collect();
        let (apps, dbs) = containers_from(&parsed, &urls, &old);
        s.applications = apps;
        s.databases = dbs;
        s.compose = parsed.yaml.clone();
        add_env_refs(&mut s.envs, &parsed, ctx.now_ms);
        if let Some(n) = name {
            s.name = n;
        }
        if description.is_some() {
            s.description = description;
        }
        if let Some(c) = connect {
            s.connect_to_docker_network = c;
        }
        if let Some(e) = escape {
            s.is_container_label_escape_enabled = e;
        }
        if instant == Some(true) {
            s.lifecycle = starting(ctx);
            s.crashed = false;
            s.forced_status = None;
        }
        s.updated_ms = ctx.now_ms;
        json!({"uuid": s.uuid, "domains": s.domains()})
    });
    match edited {
        None => Reply::message(404, "Service not found."),
        Some(v) => Reply::json(200, v).changed(),
    }
}

fn starting(ctx: Ctx) -> Lifecycle {
    Lifecycle::Starting {
        running_at_ms: ctx.now_ms + ctx.start_delay_ms + ctx.running_delay_ms,
    }
}

fn service_action(st: &mut SimState, ctx: Ctx, uuid: &str, action: Action) -> Reply {
    let Some(s) = st.services.get_mut(uuid) else {
        return Reply::message(404, "Service not found.");
    };
    let status = s.status(ctx.now_ms);
    match action {
        Action::Start if status.contains("running") => Reply::message(400, "Service is already running."),
        Action::Stop if status.contains("stopped") || status.contains("exited") => {
            Reply::message(400, "Service is already stopped.")
        }
        _ => {
            s.lifecycle = if action == Action::Stop {
                Lifecycle::Exited
            } else {
                starting(ctx)
            };
            s.crashed = false;
            s.forced_status = None;
            s.updated_ms = ctx.now_ms;
            let msg = match action {
                Action::Start => "Service starting request queued.",
                Action::Stop => "Service stopping request queued.",
                Action::Restart => "Service restarting request queued.",
            };
            Reply::message(200, msg).changed()
        }
    }
}

/// `POST /deploy?uuid=...`: StartService for each service found, with no "already running" check (a running
/// one is force-recreated). Uuids of no service are passed over; none found at all is a 404.
fn deploy(st: &mut SimState, ctx: Ctx, uuids: &[String]) -> Reply {
    let mut deployments = Vec::new();
    for uuid in uuids {
        let Some(s) = st.services.get_mut(uuid) else {
            continue;
        };
        s.lifecycle = starting(ctx);
        s.crashed = false;
        s.forced_status = None;
        s.updated_ms = ctx.now_ms;
        deployments.push(json!({
            "message": format!("Service {} started. It could take a while, be patient.", s.name),
            "resource_uuid": s.uuid,
        }));
    }
    if deployments.is_empty() {
        return Reply::message(404, "No resources found.");
    }
    Reply::json(200, json!({ "deployments": deployments })).changed()
}

#[derive(Clone, Copy, PartialEq)]
enum EnvMode {
    Create,
    Update,
}

const ENV_FIELDS: &[&str] = &[
    "key",
    "value",
    "is_literal",
    "is_multiline",
    "is_shown_once",
    "is_preview",
    "is_runtime",
    "is_buildtime",
    "comment",
];

/// Validates one env item; returns the normalised key, the value and the item for its flags.
fn env_item(item: &Obj, prefix: &str) -> Result<(String, Option<String>, Obj), Reply> {
    reject_unknown(item, ENV_FIELDS)?;
    let key = match item.get("key") {
        Some(Value::String(k)) => k.trim().replace(' ', "_"),
        _ => {
            return Err(Reply::field_error(
                &format!("{prefix}key"),
                "The key field is required.",
            ));
        }
    };
    let valid = !key.is_empty()
        && key.len() <= 255
        && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err(Reply::field_error(
            &format!("{prefix}key"),
            "The key field format is invalid.",
        ));
    }
    let value = match item.get("value") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => Some(v.trim().to_string()),
        Some(_) => {
            return Err(Reply::field_error(
                &format!("{prefix}value"),
                "The value field must be a string.",
            ));
        }
    };
    if let Some(Value::String(c)) = item.get("comment")
        && c.chars().count() > 256
    {
        return Err(Reply::field_error(
            &format!("{prefix}comment"),
            "The comment field must not be greater than 256 characters.",
        ));
    }
    for f in [
        "is_literal",
        "is_multiline",
        "is_shown_once",
        "is_preview",
        "is_runtime",
        "is_buildtime",
    ] {
        opt_bool(item, f)?;
    }
    Ok((key, value, item.clone()))
}

fn apply_env(envs: &mut Vec<EnvVarRec>, key: String, value: Option<String>, item: &Obj, now_ms: u64) -> EnvVarRec {
    let flag = |f: &str| item.get(f).and_then(Value::as_bool);
    let comment = item.get("comment").and_then(Value::as_str).map(str::to_string);
    let pos = match envs.iter().position(|e| e.key == key) {
        Some(p) => p,
        None => {
            envs.push(EnvVarRec {
                uuid: new_uuid(),
                key,
                value: None,
                is_literal: false,
                is_multiline: false,
                is_shown_once: false,
                is_required: false,
                comment: None,
                created_ms: now_ms,
                updated_ms: now_ms,
            });
            envs.len() - 1
        }
    };
    let e = &mut envs[pos];
    if item.contains_key("value") {
        e.value = value;
    }
    e.is_literal = flag("is_literal").unwrap_or(e.is_literal);
    e.is_multiline = flag("is_multiline").unwrap_or(e.is_multiline);
    e.is_shown_once = flag("is_shown_once").unwrap_or(e.is_shown_once);
    if comment.is_some() {
        e.comment = comment;
    }
    e.updated_ms = now_ms;
    e.clone()
}

fn env_write(st: &mut SimState, ctx: Ctx, uuid: &str, body: &Obj, mode: EnvMode) -> Reply {
    let Some(s) = st.services.get_mut(uuid) else {
        return Reply::message(404, "Service not found.");
    };
    let (key, value, item) = match env_item(body, "") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let exists = s.envs.iter().any(|e| e.key == key);
    match mode {
        EnvMode::Create if exists => {
            return Reply::message(
                409,
                "Environment variable already exists. Use PATCH request to update it.",
            );
        }
        EnvMode::Update if !exists => return Reply::message(404, "Environment variable not found."),
        _ => {}
    }
    let rec = apply_env(&mut s.envs, key, value, &item, ctx.now_ms);
    Reply::json(201, rec.to_json()).changed()
}

fn bulk_envs(st: &mut SimState, ctx: Ctx, uuid: &str, body: &Obj) -> Reply {
    let Some(s) = st.services.get_mut(uuid) else {
        return Reply::message(404, "Service not found.");
    };
    let Some(Value::Array(items)) = body.get("data") else {
        return Reply::message(400, "Bulk data is required.");
    };
    if items.is_empty() {
        return Reply::message(400, "Bulk data is required.");
    }
    let mut saved = Vec::new();
    let mut changed = false;
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            let mut r = Reply::field_error(&format!("data.{i}"), "The item must be an object.");
            r.mutated = changed;
            return r;
        };
        match env_item(item, "") {
            Ok((key, value, item)) => {
                saved.push(apply_env(&mut s.envs, key, value, &item, ctx.now_ms).to_json());
                changed = true;
            }
            Err(mut r) => {
                // Not transactional: earlier items stay saved.
                r.mutated = changed;
                return r;
            }
        }
    }
    Reply::json(201, Value::Array(saved)).changed()
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;

    fn ctx(now_ms: u64) -> Ctx {
        Ctx {
            now_ms,
            start_delay_ms: 0,
            running_delay_ms: 0,
            delete_delay_ms: 1000,
        }
    }

    fn call(st: &mut SimState, now_ms: u64, route: Route, body: Value) -> (u16, Value) {
        let Value::Object(obj) = body else {
            panic!("body must be an object")
        };
        let r = handle(st, ctx(now_ms), route, obj);
        match r.body {
            Body::Json(v) => (r.status, v),
            Body::Text { text, .. } => (r.status, Value::String(text)),
        }
    }

    fn service(project: &str, url: &str) -> Value {
        json!({"project_uuid": project, "environment_name": "production", "server_uuid": LOCALHOST_SERVER_UUID,
               "docker_compose_raw": STANDARD.encode("services:\n  bot:\n    image: ghcr.io/cf/bot:1\n"),
               "urls": [{"name": "bot", "url": url}]})
    }

    fn uuid(v: &Value) -> String {
        v["uuid"]
            .as_str()
            .unwrap_or_else(|| panic!("no uuid in {v}"))
            .to_string()
    }

    #[test]
    fn a_domain_is_held_from_create_until_its_service_is_gone_or_moves_off_it() {
        let mut st = SimState::default();
        let (_, p) = call(&mut st, 0, Route::CreateProject, json!({"name": "cf-tenant"}));
        let p = uuid(&p);
        let create = |st: &mut SimState, now: u64, url: &str| call(st, now, Route::CreateService, service(&p, url));
        let urls = |u: &str| json!({"urls": [{"name": "bot", "url": u}]});

        let (s, a) = create(&mut st, 0, "https://Used.Example.com");
        assert_eq!(s, 201, "{a}");
        let a = uuid(&a);
        let (s, b) = create(&mut st, 0, "https://used.example.com:8443");
        assert_eq!(s, 409, "the host is compared without case or port: {b}");
        assert_eq!(b["conflicts"][0]["resource_uuid"], json!(a));
        let (s, b) = create(&mut st, 0, "https://other.example.com");
        assert_eq!(s, 201, "{b}");
        let b = uuid(&b);
        let (s, _) = call(
            &mut st,
            0,
            Route::PatchService(b.clone()),
            urls("https://used.example.com"),
        );
        assert_eq!(s, 409, "a patch onto another service's domain");
        let (s, v) = call(
            &mut st,
            0,
            Route::PatchService(a.clone()),
            urls("https://used.example.com"),
        );
        assert_eq!(s, 200, "a service does not conflict with itself: {v}");

        // After a save and a load the indexes are rebuilt: the domain is still held and a queued
        // deletion still finishes.
        assert_eq!(call(&mut st, 0, Route::DeleteService(a.clone()), json!({})).0, 200);
        let text = serde_json::to_string(&st).expect("state serializes");
        let mut st: SimState = serde_json::from_str(&text).expect("state loads");
        st.reindex();
        let (s, _) = create(&mut st, 500, "https://used.example.com");
        assert_eq!(s, 409, "the domain is held until the deletion finishes");
        let (s, v) = create(&mut st, 1000, "https://used.example.com");
        assert_eq!(s, 201, "the deleted service's domain is free: {v}");
        assert_eq!(call(&mut st, 1000, Route::GetService(a), json!({})).0, 404);

        let (s, _) = call(&mut st, 1000, Route::PatchService(b), urls("https://moved.example.com"));
        assert_eq!(s, 200);
        let (s, v) = create(&mut st, 1000, "https://other.example.com");
        assert_eq!(s, 201, "the domain a service moved off is free: {v}");
    }
}
