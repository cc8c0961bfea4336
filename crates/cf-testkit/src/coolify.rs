//! Create-or-adopt by name on top of the Coolify client, for tests that hammer creates with lost
//! responses: the bridge's own executors do the same through their journaled intents.

use cf_bridge::coolify::{CoolifyClient, CoolifyError, CreateService, CreatedService, Service};

/// The uuid of the project named `name`, creating it if none exists; after an ambiguous create failure
/// it looks again and adopts what the lost call created.
pub async fn ensure_project(c: &CoolifyClient, name: &str, description: Option<&str>) -> Result<String, CoolifyError> {
    if let Some(p) = c.find_projects_by_name(name).await?.into_iter().min_by_key(|p| p.id) {
        return Ok(p.uuid);
    }
    match c.create_project(name, description).await {
        Ok(uuid) => Ok(uuid),
        Err(e) if e.is_ambiguous() => match c.find_projects_by_name(name).await?.into_iter().min_by_key(|p| p.id) {
            Some(p) => Ok(p.uuid),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The service named `req.name`, creating it if none exists; adopts after an ambiguous create failure.
pub async fn ensure_service(c: &CoolifyClient, req: &CreateService) -> Result<CreatedService, CoolifyError> {
    let adopt = |s: Service| CreatedService {
        domains: s.applications.iter().filter_map(|a| a.fqdn.clone()).collect(),
        uuid: s.uuid,
    };
    if let Some(s) = c.find_services_by_name(&req.name).await?.into_iter().next() {
        return Ok(adopt(s));
    }
    match c.create_service(req).await {
        Ok(created) => Ok(created),
        Err(e) if e.is_ambiguous() => match c.find_services_by_name(&req.name).await?.into_iter().next() {
            Some(s) => Ok(adopt(s)),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}
