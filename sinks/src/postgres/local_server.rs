//! A PostgreSQL server clickflow starts itself, from the server binaries installed on the
//! machine: the demo's when nothing answers at the configured URL, and the clusters tests
//! need with settings of their own (TLS, outages).
//!
//! PostgreSQL refuses to run as root: as root, every server program runs as the `postgres`
//! system user, which then owns the data directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One server: its binaries, data directory and port.
#[derive(Clone, Debug)]
pub struct LocalServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

impl LocalServer {
    /// A server for `data` on 127.0.0.1:`port`, with the newest PostgreSQL installed
    /// (Debian's `/usr/lib/postgresql/*/bin`); `None` when none is.
    pub fn new(data: &Path, port: u16) -> Option<LocalServer> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        versions.sort();
        Some(LocalServer {
            bin: versions.pop()?,
            data: data.to_path_buf(),
            port,
        })
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.data
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True when the data directory holds a cluster.
    pub fn initialized(&self) -> bool {
        self.data.join("PG_VERSION").is_file()
    }

    /// Creates the cluster: superuser `postgres`, UTF-8, the data directory mode 0700 and
    /// owned by the user the server runs as. With `password_file`, local and TCP logins need
    /// that password (SCRAM); without, they are trusted (tests only).
    pub fn init(&self, password_file: Option<&Path>) -> Result<(), String> {
        std::fs::create_dir_all(&self.data)
            .map_err(|e| format!("cannot create {}: {e}", self.data.display()))?;
        std::fs::set_permissions(&self.data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot restrict {}: {e}", self.data.display()))?;
        self.give_to_server_user(&self.data)?;
        let data = self.data.display().to_string();
        let mut args = vec!["-D", &data, "-U", "postgres", "-E", "UTF8"];
        let pwfile;
        match password_file {
            Some(path) => {
                self.give_to_server_user(path)?;
                pwfile = format!("--pwfile={}", path.display());
                args.extend(["--auth=scram-sha-256", &pwfile]);
            }
            None => args.push("--auth=trust"),
        }
        self.run("initdb", &args)
    }

    /// Copies `source` into the data directory as `name`, readable by the server only (a
    /// TLS key must be).
    pub fn install_file(&self, source: &Path, name: &str) -> Result<PathBuf, String> {
        let target = self.data.join(name);
        std::fs::copy(source, &target)
            .map_err(|e| format!("cannot copy {} into the cluster: {e}", source.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        self.give_to_server_user(&target)?;
        Ok(target)
    }

    /// Replaces the cluster's `pg_hba.conf` with `text` (read at start).
    pub fn write_hba(&self, text: &str) -> Result<(), String> {
        let path = self.data.join("pg_hba.conf");
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Starts the server on 127.0.0.1 with `settings` (`-c name=value` each), its socket
    /// in the data directory, in a process group of its own (a Ctrl-C meant for clickflow
    /// does not stop it before the last epoch is committed). Waits until it accepts.
    pub fn start(&self, settings: &[(&str, &str)]) -> Result<(), String> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.data.display()
        );
        for (name, value) in settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let data = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        )
        .map_err(|e| format!("{e}; see {log}"))
    }

    /// Stops the server (fast shutdown), if it runs.
    pub fn stop(&self) {
        let data = self.data.display().to_string();
        let _ = self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// A guard that stops the server when dropped: for a server that lives as long as one
    /// scope (a test's private cluster), stopped even when that scope panics.
    pub fn stop_on_drop(&self) -> StopOnDrop<'_> {
        StopOnDrop(self)
    }

    /// True when the data directory is owned by the user the server runs as and nobody
    /// else may enter it: one found that way was made by us (or that user), not planted.
    pub fn private_to_server_user(&self) -> bool {
        let Ok(metadata) = std::fs::metadata(&self.data) else {
            return false;
        };
        let owner = match server_user() {
            Some(user) => user_id(user),
            None => Some(current_uid()),
        };
        Some(metadata.uid()) == owner && metadata.mode() & 0o077 == 0
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = match server_user() {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&path);
                command
            }
            None => Command::new(&path),
        };
        let output = command
            .args(args)
            .process_group(0)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    fn give_to_server_user(&self, path: &Path) -> Result<(), String> {
        let Some(user) = server_user() else {
            return Ok(());
        };
        let status = Command::new("chown")
            .arg(format!("{user}:{user}"))
            .arg(path)
            .status()
            .map_err(|e| format!("cannot run chown: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("chown {user} {} failed", path.display()))
        }
    }
}

/// Stops its server when dropped ([`LocalServer::stop_on_drop`]).
pub struct StopOnDrop<'a>(&'a LocalServer);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The user servers run as: `postgres` when we are root, else ourselves (`None`).
fn server_user() -> Option<&'static str> {
    (current_uid() == 0).then_some("postgres")
}

/// The user id this process runs as.
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

fn user_id(user: &str) -> Option<u32> {
    let output = Command::new("id").args(["-u", user]).output().ok()?;
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}
