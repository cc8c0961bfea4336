//! Maps method + path under `/api/v1` to an endpoint. Anything unmatched falls to Coolify's
//! catch-all 404 (wrong methods included), except GET on lifecycle routes, which answers 405.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Team,
    Servers,
    ListProjects,
    CreateProject,
    GetProject(String),
    PatchProject(String),
    DeleteProject(String),
    ListEnvironments(String),
    CreateEnvironment(String),
    GetEnvironment(String, String),
    ListServices,
    CreateService,
    GetService(String),
    PatchService(String),
    DeleteService(String),
    ServiceAction(String, Action),
    ActionViaGet(Action),
    /// `POST /deploy?uuid=a,b,...`: the uuids come from the query ([`Route::with_query`]).
    Deploy(Vec<String>),
    DeployViaGet,
    ListEnvs(String),
    CreateEnv(String),
    PatchEnv(String),
    BulkEnvs(String),
    DeleteEnv(String, String),
}

impl Route {
    pub fn parse(method: &str, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/api/v1/")?;
        let segs: Vec<String> = rest.trim_end_matches('/').split('/').map(decode_segment).collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let own = |x: &str| x.to_string();
        let action = |a: &str| match a {
            "start" => Some(Action::Start),
            "stop" => Some(Action::Stop),
            "restart" => Some(Action::Restart),
            _ => None,
        };
        Some(match (method, s.as_slice()) {
            ("GET", ["version"]) => Route::Version,
            ("GET", ["team"]) => Route::Team,
            ("GET", ["servers"]) => Route::Servers,
            ("GET", ["projects"]) => Route::ListProjects,
            ("POST", ["projects"]) => Route::CreateProject,
            ("GET", ["projects", u]) => Route::GetProject(own(u)),
            ("PATCH", ["projects", u]) => Route::PatchProject(own(u)),
            ("DELETE", ["projects", u]) => Route::DeleteProject(own(u)),
            ("GET", ["projects", u, "environments"]) => Route::ListEnvironments(own(u)),
            ("POST", ["projects", u, "environments"]) => Route::CreateEnvironment(own(u)),
            ("GET", ["projects", u, e]) => Route::GetEnvironment(own(u), own(e)),
            ("GET", ["services"]) => Route::ListServices,
            ("POST", ["services"]) => Route::CreateService,
            ("GET", ["services", u]) => Route::GetService(own(u)),
            ("PATCH", ["services", u]) => Route::PatchService(own(u)),
            ("DELETE", ["services", u]) => Route::DeleteService(own(u)),
            ("POST", ["services", u, a]) if action(a).is_some() => Route::ServiceAction(own(u), action(a)?),
            ("GET", ["services", _, a]) if action(a).is_some() => Route::ActionViaGet(action(a)?),
            ("POST", ["deploy"]) => Route::Deploy(Vec::new()),
            ("GET", ["deploy"]) => Route::DeployViaGet,
            ("GET", ["services", u, "envs"]) => Route::ListEnvs(own(u)),
            ("POST", ["services", u, "envs"]) => Route::CreateEnv(own(u)),
            ("PATCH", ["services", u, "envs"]) => Route::PatchEnv(own(u)),
            ("PATCH", ["services", u, "envs", "bulk"]) => Route::BulkEnvs(own(u)),
            ("DELETE", ["services", u, "envs", e]) => Route::DeleteEnv(own(u), own(e)),
            _ => return None,
        })
    }

    /// Takes what the route needs from the query string: the `uuid` list of a deploy (comma separated,
    /// the parameter possibly repeated).
    pub fn with_query(self, query: &str) -> Route {
        match self {
            Route::Deploy(_) => Route::Deploy(
                query
                    .split('&')
                    .filter_map(|pair| pair.strip_prefix("uuid="))
                    .flat_map(|list| decode_segment(list).split(',').map(str::to_string).collect::<Vec<_>>())
                    .filter(|u| !u.is_empty())
                    .collect(),
            ),
            other => other,
        }
    }

    /// The endpoint template used in the request log and by fault matching.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Version => "GET /version",
            Route::Team => "GET /team",
            Route::Servers => "GET /servers",
            Route::ListProjects => "GET /projects",
            Route::CreateProject => "POST /projects",
            Route::GetProject(_) => "GET /projects/{uuid}",
            Route::PatchProject(_) => "PATCH /projects/{uuid}",
            Route::DeleteProject(_) => "DELETE /projects/{uuid}",
            Route::ListEnvironments(_) => "GET /projects/{uuid}/environments",
            Route::CreateEnvironment(_) => "POST /projects/{uuid}/environments",
            Route::GetEnvironment(..) => "GET /projects/{uuid}/{environment_name_or_uuid}",
            Route::ListServices => "GET /services",
            Route::CreateService => "POST /services",
            Route::GetService(_) => "GET /services/{uuid}",
            Route::PatchService(_) => "PATCH /services/{uuid}",
            Route::DeleteService(_) => "DELETE /services/{uuid}",
            Route::ServiceAction(_, Action::Start) => "POST /services/{uuid}/start",
            Route::ServiceAction(_, Action::Stop) => "POST /services/{uuid}/stop",
            Route::ServiceAction(_, Action::Restart) => "POST /services/{uuid}/restart",
            Route::ActionViaGet(Action::Start) => "GET /services/{uuid}/start",
            Route::ActionViaGet(Action::Stop) => "GET /services/{uuid}/stop",
            Route::ActionViaGet(Action::Restart) => "GET /services/{uuid}/restart",
            Route::Deploy(_) => "POST /deploy",
            Route::DeployViaGet => "GET /deploy",
            Route::ListEnvs(_) => "GET /services/{uuid}/envs",
            Route::CreateEnv(_) => "POST /services/{uuid}/envs",
            Route::PatchEnv(_) => "PATCH /services/{uuid}/envs",
            Route::BulkEnvs(_) => "PATCH /services/{uuid}/envs/bulk",
            Route::DeleteEnv(..) => "DELETE /services/{uuid}/envs/{env_uuid}",
        }
    }

    /// Endpoints whose body goes through Coolify's `validateIncomingRequest()`.
    pub fn takes_json_body(&self) -> bool {
        matches!(
            self,
            Route::CreateProject
                | Route::PatchProject(_)
                | Route::CreateEnvironment(_)
                | Route::CreateService
                | Route::PatchService(_)
                | Route::CreateEnv(_)
                | Route::PatchEnv(_)
                | Route::BulkEnvs(_)
        )
    }
}

fn decode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_templates() {
        assert_eq!(
            Route::parse("GET", "/api/v1/projects/abc/production"),
            Some(Route::GetEnvironment("abc".into(), "production".into()))
        );
        assert_eq!(
            Route::parse("GET", "/api/v1/projects/abc/my%20env"),
            Some(Route::GetEnvironment("abc".into(), "my env".into()))
        );
        assert_eq!(
            Route::parse("GET", "/api/v1/projects/abc/environments"),
            Some(Route::ListEnvironments("abc".into()))
        );
        assert_eq!(Route::parse("PUT", "/api/v1/projects/abc"), None);
        assert_eq!(
            Route::parse("GET", "/api/v1/services/x/start"),
            Some(Route::ActionViaGet(Action::Start))
        );
        assert_eq!(
            Route::parse("PATCH", "/api/v1/services/x/envs/bulk").map(|r| r.template()),
            Some("PATCH /services/{uuid}/envs/bulk")
        );
        assert_eq!(Route::parse("GET", "/api/v2/services"), None);
        let deploy = Route::parse("POST", "/api/v1/deploy").map(|r| r.with_query("force=false&uuid=a%2Cb&uuid=c"));
        assert_eq!(deploy, Some(Route::Deploy(vec!["a".into(), "b".into(), "c".into()])));
        assert_eq!(Route::parse("GET", "/api/v1/deploy"), Some(Route::DeployViaGet));
    }
}
