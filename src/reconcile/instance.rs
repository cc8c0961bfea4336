//! Instance executor: read the record, work out the desired spec, observe Coolify, carry out the plan,
//! write the outcome back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tracing::{info, warn};

use super::context::{ActionLog, Context, service_intent_key, service_name};
use super::error::ReconcileError;
use super::plan::{self, Action, Blocked, EffectiveState, InstanceInput, Observed, Spec};
use crate::coolify::{CoolifyError, CreateService, EnvVarInput, ServicePatch, ServiceUrl};
use crate::pocketbase::records::{BotInstance, DeployAction, DeployStatus, Tenant};
use crate::quota;
use crate::secrets;
use crate::templates::{self, RenderInput, Rendered};

/// What the record asks for, fully worked out.
struct Desired {
    spec: Spec,
    rendered: Rendered,
    domain: String,
    project_uuid: String,
    env: Vec<EnvVarInput>,
    secrets_hash: String,
}

pub async fn reconcile(ctx: &Context, id: &str, first_event_ms: Option<i64>) -> Result<(), ReconcileError> {
    let Some(inst) = ctx.pb.get_instance(id).await? else {
        return destroy(ctx, id).await;
    };
    let tenant = ctx.pb.get_tenant(&inst.tenant).await?;
    let desired = match &tenant {
        None => Err(Blocked::Invalid(format!("tenant {} does not exist", inst.tenant))),
        Some(t) => desire(ctx, &inst, t).await?,
    };
    // Our own write-back comes back as an update event: an unchanged spec needs no Coolify call.
    if let Ok(d) = &desired {
        if inst.applied_hash == d.spec.fingerprint() {
            return Ok(());
        }
    }
    let desired = match desired {
        Ok(d) => d,
        Err(blocked) => return block(ctx, &inst, blocked).await,
    };
    mark_first_action(first_event_ms);
    let observed = observe(ctx, &inst).await?;
    let input = InstanceInput {
        desired: Ok(desired.spec.clone()),
        applied: Spec::parse(&inst.applied_hash),
        observed: observed.clone(),
    };
    let actions = plan::plan_instance(&input);
    info!(record_id = %inst.id, actions = ?actions, "reconciling instance");
    execute(ctx, &inst, &desired, observed, &actions).await
}

fn mark_first_action(first_event_ms: Option<i64>) {
    if let Some(ms) = first_event_ms {
        let waited = (chrono::Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0;
        crate::metrics::metrics()
            .event_to_first_action_seconds
            .with_label_values(&["bot_instances"])
            .observe(waited);
    }
}

async fn desire(ctx: &Context, inst: &BotInstance, tenant: &Tenant) -> Result<Result<Desired, Blocked>, ReconcileError> {
    let project_uuid = tenant.coolify_project_uuid.clone();
    if project_uuid.is_empty() {
        return Ok(Err(Blocked::TenantNotReady));
    }
    let Some(template_record) = ctx.pb.get_template(&inst.template).await? else {
        return Ok(Err(Blocked::Invalid(format!("template {} does not exist", inst.template))));
    };
    let Some(template) = ctx.templates.get(&template_record.name) else {
        return Ok(Err(Blocked::Invalid(format!(
            "template {:?} is not installed in the bridge's templates directory",
            template_record.name
        ))));
    };

    let plan_tier = match tenant.plan_tier.parse::<quota::PlanTier>() {
        Ok(p) => p,
        Err(_) => return Ok(Err(Blocked::Invalid(format!("tenant has an unknown plan_tier {:?}", tenant.plan_tier)))),
    };
    let ceiling = quota::ceiling(plan_tier, tenant.max_stacks.max(0) as u32, &ctx.settings.sovereign);
    let siblings = ctx
        .pb
        .list_instances(Some(&format!("tenant = '{}'", tenant.id)))
        .await?;
    let mut ordered: Vec<(String, String)> = siblings.into_iter().map(|i| (i.created, i.id)).collect();
    ordered.sort();
    let ids: Vec<String> = ordered.into_iter().map(|(_, id)| id).collect();
    if let Some(limit) = ceiling.max_stacks {
        if !quota::admitted(&ids, limit).contains(&inst.id) {
            return Ok(Err(Blocked::Quota(quota::stack_limit_message(plan_tier, limit, tenant.max_stacks > 0))));
        }
    }
    let granted = match quota::check_resources(plan_tier, &ceiling, inst.cpu_limit, inst.mem_limit.max(0) as u32, template.cpu_default, template.mem_default_mb) {
        Ok(g) => g,
        Err(e) => return Ok(Err(Blocked::Quota(e.to_string()))),
    };

    let stored = ctx.secrets.get(&inst.id).map_err(|e| ReconcileError::Transient(format!("secret store: {e}")))?;
    let stored = stored.unwrap_or_default();
    let present: std::collections::BTreeSet<String> = stored.keys().cloned().collect();
    let missing = secrets::missing_secrets(&template.required_secrets, &present);
    if !missing.is_empty() {
        return Ok(Err(Blocked::MissingSecrets(missing)));
    }

    let domain = format!("{}.{}", inst.subdomain, ctx.settings.base_domain);
    let input = RenderInput {
        instance_id: inst.id.clone(),
        instance_name: inst.name.clone(),
        subdomain: inst.subdomain.clone(),
        domain: domain.clone(),
        tenant_slug: tenant.slug.clone(),
        config: inst.config.clone(),
        cpu: granted.cpu,
        mem_mb: granted.mem_mb,
        router_base_url: ctx.settings.router_base_url.clone(),
    };
    let rendered = match templates::render(template, &input, &ceiling) {
        Ok(r) => r,
        Err(e) => return Ok(Err(Blocked::Invalid(e.to_string()))),
    };

    let key = &ctx.settings.secrets_key;
    let secrets_hash = if stored.is_empty() { String::new() } else { secrets::secrets_hash(key, &stored) };
    let mut env = vec![EnvVarInput::plain("CLOUDFREEDOM_ROUTER_BASE_URL", &ctx.settings.router_base_url)];
    if !stored.contains_key("CLOUDFREEDOM_API_KEY") {
        env.push(EnvVarInput::new("CLOUDFREEDOM_API_KEY", secrets::router_api_key(key, &inst.id), false));
    }
    for (k, v) in &stored {
        let literal = v.expose_secret().contains('$');
        env.push(EnvVarInput::new(k.clone(), SecretString::from(v.expose_secret().to_string()), literal));
    }

    let state = plan::effective_state(inst.desired_state == "running", tenant.status == "active");
    let compose_key = format!("{}\n#domain={}\n#template={}@{}", rendered.compose_yaml, domain, template.name, template.version);
    let env_key = format!("{}|{}", secrets_hash, ctx.settings.router_base_url);
    let spec = Spec::new(state, &compose_key, &env_key, &inst.restart_requested_at);
    Ok(Ok(Desired {
        spec,
        rendered,
        domain,
        project_uuid,
        env,
        secrets_hash,
    }))
}

async fn block(ctx: &Context, inst: &BotInstance, blocked: Blocked) -> Result<(), ReconcileError> {
    let (status, message) = match &blocked {
        Blocked::MissingSecrets(keys) => ("pending", format!("waiting for secrets: {}", keys.join(", "))),
        Blocked::TenantNotReady => ("pending", "waiting for the tenant's Coolify project".to_string()),
        Blocked::Quota(m) => ("error", m.clone()),
        Blocked::Invalid(m) => ("error", m.clone()),
    };
    if inst.status != status || inst.error_message != message {
        ctx.pb
            .patch_instance_json(&inst.id, &json!({"status": status, "error_message": message}))
            .await?;
        if status == "error" {
            ActionLog::instance(ctx, &inst.id, Some(&inst.tenant), true, DeployAction::Error)
                .finish(DeployStatus::Failed, message.clone())
                .await;
        }
        warn!(record_id = %inst.id, status, reason = %message, "instance blocked");
    }
    Err(ReconcileError::NeedsChange(message))
}

async fn observe(ctx: &Context, inst: &BotInstance) -> Result<Observed, ReconcileError> {
    let mut candidates: Vec<String> = Vec::new();
    if !inst.coolify_service_id.is_empty() {
        candidates.push(inst.coolify_service_id.clone());
    }
    if let Some(intent) = ctx.journal.get_intent(&service_intent_key(&inst.id)).await? {
        if let Some(uuid) = intent.coolify_uuid {
            candidates.push(uuid);
        }
    }
    for uuid in candidates {
        match ctx.coolify.get_service(&uuid).await {
            Ok(svc) => {
                return Ok(Observed::Present {
                    uuid: svc.uuid,
                    running: svc.status.is_running(),
                });
            }
            Err(CoolifyError::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    // A lost create response or a crash before the write-back: adopt by the deterministic name.
    let mut found = ctx.coolify.find_services_by_name(&service_name(&inst.id)).await?;
    found.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    let Some(first) = found.first().cloned() else {
        return Ok(Observed::Absent);
    };
    for extra in &found[1..] {
        warn!(record_id = %inst.id, coolify_uuid = %extra.uuid, "removing duplicate service");
        ctx.coolify.delete_service(&extra.uuid).await?;
    }
    ctx.journal
        .put_intent(&service_intent_key(&inst.id), "service", &service_name(&inst.id))
        .await?;
    ctx.journal.resolve_intent(&service_intent_key(&inst.id), &first.uuid).await?;
    info!(record_id = %inst.id, coolify_uuid = %first.uuid, "adopted existing service");
    Ok(Observed::Present {
        uuid: first.uuid,
        running: first.status.is_running(),
    })
}

async fn execute(
    ctx: &Context,
    inst: &BotInstance,
    desired: &Desired,
    observed: Observed,
    actions: &[Action],
) -> Result<(), ReconcileError> {
    let mut uuid = match &observed {
        Observed::Present { uuid, .. } => Some(uuid.clone()),
        Observed::Absent => None,
    };
    let log_action = summary_action(actions);
    let log = ActionLog::instance(ctx, &inst.id, Some(&inst.tenant), true, log_action);
    let result = run_actions(ctx, inst, desired, &mut uuid, actions).await;
    match &result {
        Ok(()) => {
            if !actions.is_empty() {
                log.finish(DeployStatus::Success, success_message(log_action, desired, uuid.as_deref()))
                    .await;
            }
        }
        Err(e) => {
            let message = e.to_string();
            let mut patch = json!({"status": "error", "error_message": message});
            if let Some(u) = &uuid {
                patch["coolify_service_id"] = json!(u);
            }
            if let Err(pe) = ctx.pb.patch_instance_json(&inst.id, &patch).await {
                warn!(record_id = %inst.id, error = %pe, "could not record the failure on the instance");
            }
            log.finish(DeployStatus::Failed, message).await;
        }
    }
    result
}

fn summary_action(actions: &[Action]) -> DeployAction {
    if actions.contains(&Action::CreateService) {
        DeployAction::Deploy
    } else if actions.contains(&Action::UpdateService) || actions.contains(&Action::SetEnv) {
        DeployAction::Update
    } else if actions.contains(&Action::Restart) {
        DeployAction::Restart
    } else if actions.contains(&Action::Start) {
        DeployAction::Start
    } else if actions.contains(&Action::Stop) {
        DeployAction::Stop
    } else {
        DeployAction::Update
    }
}

fn success_message(action: DeployAction, desired: &Desired, uuid: Option<&str>) -> String {
    let uuid = uuid.unwrap_or("-");
    match action {
        DeployAction::Deploy => format!("service {uuid} created for https://{} and {}", desired.domain, desired.spec.state.as_str()),
        DeployAction::Stop => format!("service {uuid} stopped"),
        DeployAction::Start => format!("service {uuid} started"),
        DeployAction::Restart => format!("service {uuid} restarted"),
        _ => format!("service {uuid} updated and {}", desired.spec.state.as_str()),
    }
}

fn urls(desired: &Desired) -> Vec<ServiceUrl> {
    vec![ServiceUrl {
        name: desired.rendered.public_service.clone(),
        url: format!("https://{}:{}", desired.domain, desired.rendered.public_port),
    }]
}

fn need_uuid(uuid: &Option<String>) -> Result<&str, ReconcileError> {
    uuid.as_deref()
        .ok_or_else(|| ReconcileError::Transient("internal: no service uuid for a service action".into()))
}

async fn run_actions(
    ctx: &Context,
    inst: &BotInstance,
    desired: &Desired,
    uuid: &mut Option<String>,
    actions: &[Action],
) -> Result<(), ReconcileError> {
    let mut last_running = false;
    for action in actions {
        match action {
            Action::MarkDeploying => {
                if inst.status != "deploying" {
                    ctx.pb
                        .patch_instance_json(&inst.id, &json!({"status": "deploying", "error_message": ""}))
                        .await?;
                }
            }
            Action::CreateService => {
                *uuid = Some(create_service(ctx, inst, desired).await?);
            }
            Action::UpdateService => {
                let patch = ServicePatch {
                    compose_yaml: Some(desired.rendered.compose_yaml.clone()),
                    urls: Some(urls(desired)),
                    ..Default::default()
                };
                ctx.coolify.patch_service(need_uuid(uuid)?, &patch).await?;
            }
            Action::SetEnv => {
                ctx.coolify.bulk_upsert_envs(need_uuid(uuid)?, &desired.env).await?;
            }
            Action::Start => ctx.coolify.start_service(need_uuid(uuid)?).await?,
            Action::Stop => ctx.coolify.stop_service(need_uuid(uuid)?).await?,
            Action::Restart => ctx.coolify.restart_service(need_uuid(uuid)?).await?,
            Action::WaitRunning => {
                wait_running(ctx, need_uuid(uuid)?).await?;
                last_running = true;
            }
            Action::WriteBack(state) => {
                let status = match state {
                    EffectiveState::Running => "running",
                    EffectiveState::Stopped => "stopped",
                };
                let mut patch = json!({
                    "status": status,
                    "error_message": "",
                    "coolify_service_id": uuid.clone().unwrap_or_default(),
                    "coolify_project_id": desired.project_uuid,
                    "domain": desired.domain,
                    "applied_hash": desired.spec.fingerprint(),
                    "secrets_hash": desired.secrets_hash,
                });
                if last_running {
                    patch["last_healthy_at"] = json!(crate::pocketbase::records::pb_now());
                }
                ctx.pb.patch_instance_json(&inst.id, &patch).await?;
            }
            Action::Block(_) | Action::DeleteService => {
                return Err(ReconcileError::Transient(format!("internal: unexpected action {action:?}")));
            }
        }
    }
    Ok(())
}

async fn create_service(ctx: &Context, inst: &BotInstance, desired: &Desired) -> Result<String, ReconcileError> {
    let key = service_intent_key(&inst.id);
    let name = service_name(&inst.id);
    ctx.journal.put_intent(&key, "service", &name).await?;
    let req = CreateService {
        project_uuid: desired.project_uuid.clone(),
        environment_name: Some(ctx.settings.environment.clone()),
        server_uuid: ctx.settings.server_uuid.clone(),
        name: name.clone(),
        description: Some(format!("CloudFreedom instance {} ({})", inst.id, inst.name)),
        compose_yaml: desired.rendered.compose_yaml.clone(),
        urls: urls(desired),
        instant_deploy: false,
        ..Default::default()
    };
    let uuid = match ctx.coolify.create_service(&req).await {
        Ok(created) => created.uuid,
        Err(e) if e.is_ambiguous() => {
            // The response was lost: the service may exist. Adopt it by name; never POST blindly again.
            let found = ctx.coolify.find_services_by_name(&name).await?;
            match found.into_iter().next() {
                Some(svc) => svc.uuid,
                None => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    ctx.journal.resolve_intent(&key, &uuid).await?;
    // Record the uuid at once so a crash before the final write-back still finds it.
    ctx.pb
        .patch_instance_json(&inst.id, &json!({"coolify_service_id": uuid, "coolify_project_id": desired.project_uuid}))
        .await?;
    info!(record_id = %inst.id, coolify_uuid = %uuid, "service created");
    Ok(uuid)
}

async fn wait_running(ctx: &Context, uuid: &str) -> Result<(), ReconcileError> {
    let deadline = Instant::now() + ctx.settings.running_timeout;
    let mut delay = Duration::from_millis(200);
    loop {
        let svc = ctx.coolify.get_service(uuid).await?;
        if svc.status.is_running() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ReconcileError::Transient(format!(
                "service {uuid} did not reach running within {} s (last status: {})",
                ctx.settings.running_timeout.as_secs(),
                svc.status
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The record is gone: destroy its service(s) and verify they are gone.
async fn destroy(ctx: &Context, id: &str) -> Result<(), ReconcileError> {
    let key = service_intent_key(id);
    let mut uuids: Vec<String> = Vec::new();
    if let Some(intent) = ctx.journal.get_intent(&key).await? {
        if let Some(u) = intent.coolify_uuid {
            uuids.push(u);
        }
    }
    for svc in ctx.coolify.find_services_by_name(&service_name(id)).await? {
        if !uuids.contains(&svc.uuid) {
            uuids.push(svc.uuid);
        }
    }
    let mut removed = BTreeMap::new();
    for uuid in &uuids {
        let log = ActionLog::instance(ctx, id, None, false, DeployAction::Destroy);
        match ctx.coolify.delete_service_and_wait(uuid, Duration::from_secs(120)).await {
            Ok(()) | Err(CoolifyError::NotFound { .. }) => {
                log.finish(DeployStatus::Success, format!("service {uuid} destroyed and verified gone"))
                    .await;
                removed.insert(uuid.clone(), ());
            }
            Err(e) => {
                log.finish(DeployStatus::Failed, format!("could not destroy service {uuid}: {e}")).await;
                return Err(e.into());
            }
        }
    }
    ctx.journal.clear_intent(&key).await?;
    if !removed.is_empty() {
        info!(record_id = %id, services = removed.len(), "instance destroyed");
    }
    Ok(())
}
