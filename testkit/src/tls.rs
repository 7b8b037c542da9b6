//! Test certificates made with the `openssl` command: a CA, and server certificates it signs
//! for the names a test chooses.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of certificates; removed when dropped.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command runs (Debian: apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl TestCerts {
    /// An empty directory, readable by other users (a server run as `postgres` reads it).
    pub fn new() -> TestCerts {
        TestCerts {
            dir: crate::shared_tempdir(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A self-signed CA `<name>.crt`/`<name>.key` (P-256); returns the certificate's path.
    pub fn ca(&self, name: &str) -> PathBuf {
        openssl(
            self.dir(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
        self.dir().join(format!("{name}.crt"))
    }

    /// `<name>.crt`/`<name>.key` for `alt_names` (`DNS:localhost`, `IP:127.0.0.1`), signed
    /// by the CA `ca`; returns (certificate, key).
    pub fn server(&self, name: &str, ca: &str, alt_names: &str) -> (PathBuf, PathBuf) {
        openssl(
            self.dir(),
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir().join(&ext),
            format!("subjectAltName={alt_names}\n"),
        )
        .expect("write");
        openssl(
            self.dir(),
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &format!("{name}.crt"),
            ],
        );
        (
            self.dir().join(format!("{name}.crt")),
            self.dir().join(format!("{name}.key")),
        )
    }
}

impl Default for TestCerts {
    fn default() -> TestCerts {
        TestCerts::new()
    }
}
