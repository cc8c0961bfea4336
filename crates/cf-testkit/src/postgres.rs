//! A real PostgreSQL for the tests: a fresh cluster (initdb) in a temporary directory, on a free port of
//! 127.0.0.1 with its socket in that directory, and a fresh database per test. PostgreSQL refuses to run
//! as root and CI runs as root: then the cluster runs as an unprivileged user (`$CF_PG_TEST_USER`, default
//! `postgres`, which Debian's package creates).
//!
//! Cleanup does not depend on `Drop` (a process-wide cluster in a static is never dropped): a small reaper
//! shell reads a pipe from this process and, when it closes (drop, exit, crash or `kill -9` of the tests),
//! stops the server and removes the directory.

use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context as _, bail};

use crate::{free_port, tail};

const SUPERUSER: &str = "cfbridge";
const HOW_TO_INSTALL: &str = "install Debian's PostgreSQL server with ./scripts/install-postgres.sh (as root: apt-get \
     install postgresql), or point CF_PG_BIN_DIR at a directory holding initdb, pg_ctl and postgres";

/// One PostgreSQL cluster; stopped and removed when dropped (or when the test process ends).
pub struct Postgres {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The directory of the Unix socket.
    pub socket_dir: PathBuf,
    /// With [`Postgres::start_with_tls`]: the CA (PEM) that signed the server's certificate (for
    /// `127.0.0.1` and `localhost`).
    pub ca_cert: Option<PathBuf>,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    run_as: Option<(u32, u32)>,
    reaper: Mutex<Option<Child>>,
    next_db: AtomicU32,
}

/// A database of its own for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    /// `postgres://user:password@127.0.0.1:port/name?sslmode=disable`.
    pub url: String,
}

/// Where initdb, pg_ctl and postgres are: `$CF_PG_BIN_DIR` (scripts/test.sh exports it), else the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps them out of PATH).
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    let has_all = |d: &Path| ["initdb", "pg_ctl", "postgres"].iter().all(|b| d.join(b).is_file());
    if let Some(dir) = std::env::var_os("CF_PG_BIN_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if has_all(&dir) {
            return Ok(dir);
        }
        bail!(
            "CF_PG_BIN_DIR={} has no initdb, pg_ctl and postgres: {HOW_TO_INSTALL}",
            dir.display()
        );
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, bin)| has_all(bin))
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("the PostgreSQL server is not installed (no /usr/lib/postgresql/*/bin/initdb): {HOW_TO_INSTALL}"),
    }
}

/// The uid and gid to run PostgreSQL as: None when this process is not root (it runs as us).
fn unprivileged_user() -> anyhow::Result<Option<(u32, u32)>> {
    let euid = std::fs::metadata("/proc/self").context("reading /proc/self")?.uid();
    if euid != 0 {
        return Ok(None);
    }
    let name = std::env::var("CF_PG_TEST_USER").unwrap_or_else(|_| "postgres".into());
    let id = |flag: &str| -> anyhow::Result<u32> {
        let out = Command::new("id").args([flag, &name]).output().context("running id")?;
        if !out.status.success() {
            bail!(
                "PostgreSQL cannot run as root and the user {name:?} does not exist (Debian's postgresql package \
                 creates `postgres`; or set CF_PG_TEST_USER to an unprivileged user): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

impl Postgres {
    /// A cluster of its own (for tests that stop or restart the server).
    pub fn start() -> Postgres {
        match Self::try_start(false) {
            Ok(pg) => pg,
            Err(e) => panic!("PostgreSQL did not start: {e:#}"),
        }
    }

    /// A cluster of its own that also speaks TLS, with a certificate from a CA of its own ([`Postgres::ca_cert`]).
    pub fn start_with_tls() -> Postgres {
        match Self::try_start(true) {
            Ok(pg) => pg,
            Err(e) => panic!("PostgreSQL with TLS did not start: {e:#}"),
        }
    }

    /// The cluster this test process shares: started on first use; each test takes a [`Postgres::database`].
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(Postgres::start)
    }

    pub fn try_start(tls: bool) -> anyhow::Result<Postgres> {
        let bin = pg_bin_dir()?;
        let run_as = unprivileged_user()?;
        let root = tempfile::Builder::new()
            .prefix("cf-bridge-pg-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(std::env::temp_dir())?
            .keep();
        let password = format!("pg-test-{:016x}", rand_u64());
        let pwfile = root.join("pwfile");
        std::fs::write(&pwfile, &password)?;
        let socket_dir = root.join("sock");
        std::fs::create_dir(&socket_dir)?;
        if let Some((uid, gid)) = run_as {
            for p in [&root, &pwfile, &socket_dir] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to the PostgreSQL user", p.display()))?;
            }
        }
        let mut pg = Postgres {
            port: free_port(),
            user: SUPERUSER.into(),
            password,
            socket_dir,
            ca_cert: None,
            data: root.join("data"),
            log: root.join("postgres.log"),
            bin,
            run_as,
            reaper: Mutex::new(None),
            next_db: AtomicU32::new(0),
        };
        // The reaper first, so that a failed initdb or start is cleaned up too.
        pg.reaper = Mutex::new(Some(pg.spawn_reaper(&root)?));
        let initdb = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--no-sync", "--no-locale", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("running initdb")?;
        if !initdb.status.success() {
            bail!(
                "initdb failed{}: {}{}",
                if run_as.is_some() {
                    " (it runs as the PostgreSQL user, who must be able to reach the temporary directory: check TMPDIR)"
                } else {
                    ""
                },
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr)
            );
        }
        std::fs::remove_file(&pwfile)?;
        if tls {
            pg.ca_cert = Some(pg.enable_tls(&root)?);
        }
        pg.start_server()?;
        Ok(pg)
    }

    /// Makes a CA and a server certificate signed by it (openssl, which Debian's postgresql package brings),
    /// and turns TLS on. Returns the CA's path.
    fn enable_tls(&self, root: &Path) -> anyhow::Result<PathBuf> {
        let dir = root.join("tls");
        std::fs::create_dir(&dir)?;
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .context("running openssl (apt-get install openssl)")?;
            if !out.status.success() {
                bail!("openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=cf-bridge test CA",
                ],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req"],
                &ec[..],
                &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
            ]
            .concat(),
        )?;
        std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ])?;
        for file in ["server.crt", "server.key"] {
            let to = self.data.join(file);
            std::fs::copy(dir.join(file), &to)?;
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid))?;
            }
        }
        // The reaper, running as the PostgreSQL user, removes the directory: everything in it is that user's.
        if let Some((uid, gid)) = self.run_as {
            for entry in std::fs::read_dir(&dir)? {
                std::os::unix::fs::chown(entry?.path(), Some(uid), Some(gid))?;
            }
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        std::io::Write::write_all(
            &mut conf,
            b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )?;
        Ok(dir.join("ca.crt"))
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.stdin(Stdio::null());
        if let Some(root) = self.data.parent() {
            // The unprivileged user may not be able to enter the test's working directory.
            cmd.current_dir(root);
        }
        if let Some((uid, gid)) = self.run_as {
            // std drops the supplementary groups too when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn spawn_reaper(&self, root: &Path) -> anyhow::Result<Child> {
        const SCRIPT: &str = r#"trap '' INT HUP
while read -r _; do :; done
"$1/pg_ctl" -D "$2" -m fast -w -t 20 stop >/dev/null 2>&1 || "$1/pg_ctl" -D "$2" -m immediate -w stop >/dev/null 2>&1
rm -rf "$3""#;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", SCRIPT, "cf-pg-reaper"])
            .arg(&self.bin)
            .arg(&self.data)
            .arg(root)
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.spawn().context("spawning the cleanup process")
    }

    fn start_server(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.socket_dir.display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\n--- postgres.log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail(&self.server_log(), 30)
            );
        }
        Ok(())
    }

    /// Stops the server (a fast shutdown: sessions are ended); the data stays for [`Postgres::restart`].
    pub fn stop(&self) {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "30", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server again on the same port and data after [`Postgres::stop`].
    pub fn restart(&self) {
        if let Err(e) = self.start_server() {
            panic!("PostgreSQL did not start again: {e:#}");
        }
    }

    /// The server's log (for failure messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A URL for `database` with this cluster's superuser and password (no TLS: the cluster has none).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{database}?sslmode=disable",
            self.user, self.password, self.port
        )
    }

    /// A fresh, empty database.
    pub async fn database(&self) -> TestDb {
        let name = format!("t{}", self.next_db.fetch_add(1, Ordering::SeqCst));
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connecting to the test PostgreSQL: {e}\n{}",
                    tail(&self.server_log(), 20)
                )
            });
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        drop(client);
        let _ = conn.await;
        TestDb {
            url: self.url(&name),
            name,
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let reaper = self.reaper.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut reaper) = reaper {
            // Closing its stdin tells the reaper to stop the server and remove the directory.
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
    }
}

/// Randomly keyed (std seeds each `RandomState` from the OS): enough for a throwaway test password.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}
