//! Issue 18, item 1: the image works. No container engine runs here, so the Dockerfile's runtime stage is
//! read (ENV, EXPOSE, VOLUME, HEALTHCHECK, ENTRYPOINT/CMD, COPY) and the built binary is started with
//! exactly that environment, the image's paths mapped onto this machine (the volume onto a temporary
//! directory, the copied templates onto the repository's): it must listen on every interface, and
//! `cf-bridge healthcheck` (the HEALTHCHECK) must exit 0 against it and 1 when nothing listens.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cf_testkit::{ADMIN_TOKEN, BASE_DOMAIN, ROUTER_URL, SECRETS_KEY, WEBHOOK_SECRET, free_port, repo_root};

/// The instructions of one stage, continuation lines joined, comments dropped.
#[derive(Debug, Default)]
struct Stage {
    lines: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, instruction: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(i, _)| i == instruction)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    fn one(&self, instruction: &str) -> &str {
        let all = self.all(instruction);
        assert_eq!(all.len(), 1, "one {instruction} in the runtime stage: {all:?}");
        all[0]
    }

    /// `ENV K=V K=V` (the only form the Dockerfile uses).
    fn env(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for rest in self.all("ENV") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("ENV in K=V form only: {rest}"));
                out.insert(k.to_string(), v.trim_matches('"').to_string());
            }
        }
        out
    }
}

/// The stages of a Dockerfile, in order.
fn stages(text: &str) -> Vec<Stage> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for line in joined.into_iter().filter(|l| !l.trim().is_empty()) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            out.push(Stage::default());
        }
        if let Some(stage) = out.last_mut() {
            stage.lines.push((instruction, rest.trim().to_string()));
        }
    }
    out
}

/// A JSON-array instruction argument (`["cf-bridge", "serve"]`).
fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{rest} is not the exec (JSON) form: {e}"))
}

/// Whether a socket listens on 0.0.0.0:`port` (from /proc/net/tcp: state 0A is LISTEN).
fn listens_on_every_interface(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("00000000:{port:04X}");
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"0A")
    })
}

fn healthcheck(env: &BTreeMap<String, String>, cwd: &Path) -> (Option<i32>, String) {
    let out = Command::new(crate::bridge_bin())
        .arg("healthcheck")
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .output()
        .expect("run cf-bridge healthcheck");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_images_runtime_stage_listens_on_every_interface_and_its_healthcheck_follows_readiness() {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let stages = stages(&text);
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let build = &stages[0];
    let run = stages.last().expect("runtime stage");

    // Build: BuildKit caches for the registry and target/.
    let build_runs = build.all("RUN").join("\n");
    for cache in [
        "type=cache,target=/usr/local/cargo/registry",
        "type=cache,target=/src/target",
    ] {
        assert!(build_runs.contains(cache), "build stage caches {cache}: {build_runs}");
    }

    // Runtime: what the image says.
    let image_env = run.env();
    let bind: SocketAddr = image_env
        .get("CF_BRIDGE__ADMIN__BIND")
        .expect("the image sets admin.bind")
        .parse()
        .expect("admin.bind is an address");
    assert!(
        bind.ip().is_unspecified(),
        "the image listens on every interface: {bind}"
    );
    let exposed: Vec<u16> = run
        .all("EXPOSE")
        .iter()
        .flat_map(|r| r.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();
    assert!(
        exposed.contains(&bind.port()),
        "EXPOSE {exposed:?} names admin.bind's port {bind}"
    );
    assert_eq!(exec_form(run.one("ENTRYPOINT")), ["cf-bridge"]);
    assert_eq!(exec_form(run.one("CMD")), ["serve"]);
    let health = run.one("HEALTHCHECK");
    let (_, probe) = health.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]");
    assert_eq!(
        exec_form(probe),
        ["cf-bridge", "healthcheck"],
        "no curl in the image: {health}"
    );
    let volumes: Vec<String> = run.all("VOLUME").iter().flat_map(|r| exec_form(r)).collect();
    for key in ["CF_BRIDGE__JOURNAL__PATH", "CF_BRIDGE__SECRETS__STORE_PATH"] {
        let path = image_env.get(key).unwrap_or_else(|| panic!("the image sets {key}"));
        assert!(
            volumes.iter().any(|v| Path::new(path).starts_with(v)),
            "{key}={path} is in a VOLUME ({volumes:?})"
        );
    }

    // The image's filesystem on this machine: the volume is a temporary directory (as a mount would
    // be), what the runtime stage COPYs from the build context is the repository's.
    let data = tempfile::tempdir().expect("volume dir");
    let copies: Vec<(String, PathBuf)> = run
        .all("COPY")
        .iter()
        .filter(|r| !r.starts_with("--"))
        .map(|r| {
            let parts: Vec<&str> = r.split_whitespace().collect();
            (parts[parts.len() - 1].to_string(), repo_root().join(parts[0]))
        })
        .collect();
    let map_path = |value: &str| -> String {
        if let Some(v) = volumes.iter().find(|v| Path::new(value).starts_with(v.as_str())) {
            let rest = Path::new(value).strip_prefix(v).expect("under the volume");
            return data.path().join(rest).display().to_string();
        }
        match copies.iter().find(|(dst, _)| Path::new(value).starts_with(dst)) {
            Some((dst, src)) => src
                .join(Path::new(value).strip_prefix(dst).expect("under the copy"))
                .display()
                .to_string(),
            None => value.to_string(),
        }
    };
    let mut env: BTreeMap<String, String> = image_env.iter().map(|(k, v)| (k.clone(), map_path(v))).collect();
    // Port 8088 may be taken on a shared machine: then the same wildcard address on a free port.
    let port = match TcpListener::bind(bind) {
        Ok(l) => {
            drop(l);
            bind.port()
        }
        Err(_) => {
            let p = free_port();
            println!("port {} is taken here; using 0.0.0.0:{p}", bind.port());
            env.insert("CF_BRIDGE__ADMIN__BIND".into(), format!("0.0.0.0:{p}"));
            p
        }
    };
    // What the operator adds (the deployment's own settings); PocketBase and Coolify are not running:
    // the bridge starts anyway and is ready (it takes and keeps events).
    for (k, v) in [
        (
            "CF_BRIDGE__POCKETBASE__URL",
            format!("http://127.0.0.1:{}", free_port()),
        ),
        (
            "CF_BRIDGE__POCKETBASE__SUPERUSER_EMAIL",
            "bridge@cloudfreedom.test".into(),
        ),
        (
            "CF_BRIDGE__POCKETBASE__SUPERUSER_PASSWORD",
            "bridge-test-password-1".into(),
        ),
        ("CF_BRIDGE__COOLIFY__URL", format!("http://127.0.0.1:{}", free_port())),
        ("CF_BRIDGE__COOLIFY__TOKEN", "1|container-test-token".into()),
        ("CF_BRIDGE__WEBHOOK__SECRET", WEBHOOK_SECRET.into()),
        ("CF_BRIDGE__ADMIN__TOKEN", ADMIN_TOKEN.into()),
        ("CF_BRIDGE__DOMAINS__BASE_DOMAIN", BASE_DOMAIN.into()),
        ("CF_BRIDGE__ROUTER__BASE_URL", ROUTER_URL.into()),
        ("CF_BRIDGE__SECRETS__KEY", SECRETS_KEY.into()),
    ] {
        assert!(
            !image_env.contains_key(k),
            "the image must not set the deployment's {k}"
        );
        env.insert(k.to_string(), v);
    }

    let log_path = data.path().join("bridge.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let bridge = Killed(
        Command::new(crate::bridge_bin())
            .args(exec_form(run.one("CMD")))
            .env_clear()
            .envs(&env)
            .current_dir(data.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start cf-bridge serve"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (code, out) = loop {
        let (code, out) = healthcheck(&env, data.path());
        if code == Some(0) || Instant::now() > deadline {
            break (code, out);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert_eq!(
        code,
        Some(0),
        "healthcheck against the running bridge: {out}\n{}",
        log()
    );
    assert!(
        listens_on_every_interface(port),
        "nothing listens on 0.0.0.0:{port}\n{}",
        log()
    );
    assert!(
        data.path().join("cf-bridge.db").exists(),
        "the journal is in the volume"
    );

    drop(bridge);
    let (code, out) = healthcheck(&env, data.path());
    assert_eq!(code, Some(1), "healthcheck with nothing listening: {out}");
    assert!(out.contains("not ready"), "{out}");
}
