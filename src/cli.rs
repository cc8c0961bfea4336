//! Offline commands: render a template for an instance record, publish templates to PocketBase, probe a
//! running bridge's readiness; and the admin URL the online commands call.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;

use crate::config::{ReconcileSettings, Settings};
use crate::pocketbase::records::BOT_TEMPLATES;
use crate::pocketbase::{BotTemplate, PbClient};
use crate::quota::{self, PlanTier};
use crate::templates::{RenderInput, TemplateSet, render};

/// Renders template `name` for the instance record in `instance_file` (JSON, as PocketBase returns it).
pub fn render_template(
    dir: &Path,
    name: &str,
    instance_file: &Path,
    plan: &str,
    settings: Option<&Settings>,
) -> anyhow::Result<String> {
    let set = TemplateSet::load_dir(dir).with_context(|| format!("loading templates from {}", dir.display()))?;
    let template = set
        .get(name)
        .with_context(|| format!("no template {name:?} in {} (have: {})", dir.display(), names(&set)))?;
    let raw = std::fs::read_to_string(instance_file).with_context(|| format!("reading {}", instance_file.display()))?;
    let record: serde_json::Value =
        serde_json::from_str(&raw).with_context(|| format!("{} is not JSON", instance_file.display()))?;
    let text = |k: &str, default: &str| record.get(k).and_then(|v| v.as_str()).unwrap_or(default).to_string();
    let plan: PlanTier = plan
        .parse()
        .map_err(|e: quota::QuotaError| anyhow::anyhow!("--plan: {e}"))?;
    let sovereign = settings
        .map(|s| s.reconcile.sovereign_ceiling())
        .unwrap_or_else(|| ReconcileSettings::default().sovereign_ceiling());
    let ceiling = quota::ceiling(plan, 0, &sovereign);
    let defaults = quota::TemplateDefaults {
        cpu: template.cpu_default,
        mem_mb: template.mem_default_mb,
    };
    let cpu = record.get("cpu_limit").and_then(|v| v.as_f64()).unwrap_or(0.0);
    let mem = record.get("mem_limit").and_then(|v| v.as_u64()).unwrap_or(0);
    let mem = u32::try_from(mem).context("mem_limit is too large")?;
    let granted = quota::check(plan, &ceiling, cpu, mem, defaults, 0)?;
    let base_domain = settings
        .map(|s| s.domains.base_domain.clone())
        .unwrap_or_else(|| "bots.example.com".into());
    let subdomain = text("subdomain", "sample");
    let input = RenderInput {
        instance_id: text("id", "sampleinstance1"),
        instance_name: text("name", "sample"),
        domain: format!("{subdomain}.{base_domain}"),
        subdomain,
        tenant_slug: text("tenant_slug", "sample-tenant"),
        config: record.get("config").cloned().unwrap_or(serde_json::Value::Null),
        cpu: granted.cpu,
        mem_mb: granted.mem_mb,
        router_base_url: settings
            .map(|s| s.router.base_url_text().to_string())
            .unwrap_or_else(|| "https://router.example.com".into()),
    };
    Ok(render(template, &input, &ceiling)?.compose_yaml)
}

/// Checks that `dir` holds loadable templates (for `check-config`); says how many.
pub fn check_templates(dir: &Path) -> anyhow::Result<usize> {
    let set = TemplateSet::load_dir(dir).with_context(|| format!("loading templates from {}", dir.display()))?;
    let n = set.iter().count();
    if n == 0 {
        anyhow::bail!(
            "no templates in {} (a relative path is resolved against the configuration file's directory)",
            dir.display()
        );
    }
    Ok(n)
}

fn names(set: &TemplateSet) -> String {
    set.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Upserts `bot_templates` from the templates directory (keyed by name) and marks removed ones inactive.
pub async fn sync_templates(settings: &Settings) -> anyhow::Result<String> {
    let dir = &settings.reconcile.templates_dir;
    let set = TemplateSet::load_dir(dir).with_context(|| format!("loading templates from {}", dir.display()))?;
    let pb = PbClient::new(&settings.pocketbase)?;
    pb.authenticate().await.context("PocketBase authentication failed")?;
    let existing = pb.list_templates().await.context("listing bot_templates")?;
    let mut lines = Vec::new();
    let mut on_disk = BTreeSet::new();
    for t in set.iter() {
        on_disk.insert(t.name.clone());
        let body = json!({
            "name": t.name,
            "description": t.description,
            "compose_template": t.compose_source,
            "required_secrets": t.required_secrets,
            "default_config": t.default_config,
            "icon": t.icon,
            "cpu_default": t.cpu_default,
            "mem_default": t.mem_default_mb,
            "public_service": t.public_service,
            "public_port": t.public_port,
            "active": true,
            "version": t.version,
        });
        match existing.iter().find(|e| e.name == t.name) {
            Some(e) => {
                let _: BotTemplate = pb
                    .patch(BOT_TEMPLATES, &e.id, &body)
                    .await
                    .with_context(|| format!("updating template {}", t.name))?;
                lines.push(format!("updated  {} {} ({})", t.name, t.version, e.id));
            }
            None => {
                let created: BotTemplate = pb
                    .create(BOT_TEMPLATES, &body)
                    .await
                    .with_context(|| format!("creating template {}", t.name))?;
                lines.push(format!("created  {} {} ({})", t.name, t.version, created.id));
            }
        }
    }
    for e in existing.iter().filter(|e| !on_disk.contains(&e.name) && e.active) {
        let _: BotTemplate = pb
            .patch(BOT_TEMPLATES, &e.id, &json!({"active": false}))
            .await
            .with_context(|| format!("deactivating template {}", e.name))?;
        lines.push(format!("inactive {} (no longer in {})", e.name, dir.display()));
    }
    Ok(lines.join("\n"))
}

/// The admin path of a template action; a name that is not a template name is refused here rather than
/// put in a URL.
pub fn template_path(name: &str, action: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        anyhow::bail!("template names are lowercase letters, digits, '-' or '_'");
    }
    Ok(format!("/admin/templates/{name}/{action}"))
}

/// A rollout's state in a few lines: its progress, and the instance and reason that stopped it.
pub fn rollout_report(r: &serde_json::Value) -> String {
    let mut out = format!(
        "rollout {} of {} ({}): {}, {}/{} batches done, {} instance(s)",
        r["id"],
        r["template"].as_str().unwrap_or("?"),
        r["kind"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["batches_done"],
        r["batches_total"],
        r["items"].as_array().map_or(0, Vec::len),
    );
    if let Some(f) = r["failure"].as_object() {
        out.push_str(&format!(
            "\nstopped at batch {}: instance {}: {}",
            f.get("batch").unwrap_or(&serde_json::Value::Null),
            f.get("instance").and_then(|v| v.as_str()).unwrap_or("?"),
            f.get("reason").and_then(|v| v.as_str()).unwrap_or("?"),
        ));
    }
    if let Some(skipped) = r["skipped"].as_array().filter(|s| !s.is_empty()) {
        out.push_str(&format!(
            "\nleft as they are (version before the rollout unknown): {}",
            skipped.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
        ));
    }
    out
}

/// How long `cf-bridge healthcheck` waits for `/readyz`.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The `/readyz` URL of a bridge bound to `bind`; a wildcard address is reached on loopback.
pub fn readyz_url(bind: SocketAddr) -> String {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/readyz", SocketAddr::new(ip, bind.port()))
}

/// Ok when `url` answers 200; otherwise why not (the status and the parts not ready, or the error).
pub async fn healthcheck(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(HEALTHCHECK_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let resp = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
    Err(format!("{url} answered {status}: {}", body["not_ready"]))
}

/// Checks `--admin-url`: an absolute http(s) URL with a host, optionally a path prefix (a bridge behind a
/// reverse proxy), and nothing a request could not carry or should not (credentials, query, fragment).
pub fn parse_admin_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e}); expected e.g. http://127.0.0.1:8088"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not hold credentials; the admin token comes from admin.token".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or a fragment".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_bind_is_probed_on_loopback() {
        let at = |s: &str| readyz_url(s.parse().expect("address"));
        assert_eq!(at("0.0.0.0:8088"), "http://127.0.0.1:8088/readyz");
        assert_eq!(at("[::]:9000"), "http://[::1]:9000/readyz");
        assert_eq!(at("10.0.0.5:8088"), "http://10.0.0.5:8088/readyz");
    }

    #[test]
    fn admin_urls_are_checked() {
        for good in [
            "http://127.0.0.1:8088",
            "https://bridge.internal",
            "https://ops.example.com/bridge/",
        ] {
            assert!(parse_admin_url(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("127.0.0.1:8088", "not a URL"),
            ("localhost:8088", "scheme"),
            ("localhost", "not a URL"),
            ("ftp://host", "scheme"),
            ("http://", "not a URL"),
            ("http://user:pw@host", "credentials"),
            ("http://host/?x=1", "query"),
            ("http://host/#top", "fragment"),
            ("http://exa mple.com", "not a URL"),
        ] {
            let err = parse_admin_url(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
