//! TLS to PostgreSQL, with libpq's `sslmode` and `sslrootcert` meaning what they mean there.
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default, as libpq) | when the server offers it | no |
//! | `require` | always | no; with an `sslrootcert`, its chain (as libpq) |
//! | `verify-ca` | always | chain to the root certificate |
//! | `verify-full` | always | chain, and the host name (or IP) in the certificate |
//!
//! `sslrootcert` is a PEM file of trusted roots, or `system` for the machine's trust store;
//! without it, `verify-ca`/`verify-full` look for `~/.postgresql/root.crt`, as libpq does.
//! tokio-postgres parses only `disable`/`prefer`/`require`, so both settings are taken out
//! of the URL ([`split_tls_settings`]) before it sees it. The handshake is rustls with the
//! ring provider (no OpenSSL, no C toolchain beyond what ring needs).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How a connection is encrypted and its server checked (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, unchecked; plain otherwise.
    #[default]
    Prefer,
    /// TLS always; the certificate is checked only when a root certificate is given.
    Require,
    /// TLS, and the certificate must chain to the root certificate.
    VerifyCa,
    /// TLS, the chain, and the host name the URL connects to.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SslMode, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            // libpq's `allow` tries plain first; TLS-if-offered is the closest we do.
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(format!(
                "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }
}

impl SslMode {
    /// The name as in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether to insist.
    pub(super) fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// The TLS settings of a database URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: a PEM file, or `system`.
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?sslmode=…&sslrootcert=…`) or
/// a key=value string, returning the rest for tokio-postgres and the settings found.
pub fn split_tls_settings(url: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings::default();
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => settings.mode = value.parse()?,
            "sslrootcert" => settings.root_cert = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), settings));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key, percent_decode(value))? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else {
        let mut kept = Vec::new();
        for pair in url.split_whitespace() {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(key.trim(), value.trim_matches('\'').to_string())? {
                kept.push(pair);
            }
        }
        kept.join(" ")
    };
    Ok((rest, settings))
}

/// `%XX` escapes decoded (a path in a URL query may carry them).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| value.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The rustls connector for `settings`, or `None` for `disable`. Fails when a root
/// certificate is needed and cannot be read.
pub fn connector(settings: &TlsSettings) -> Result<Option<MakeRustlsConnect>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let roots = match (settings.mode, &settings.root_cert) {
        (SslMode::Disable, _) => return Ok(None),
        (SslMode::Prefer | SslMode::Require, None) => None,
        (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull, _) => {
            Some(Arc::new(root_store(settings)?))
        }
    };
    let config = match (settings.mode, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (_, roots) => {
            let chain = roots
                .map(|roots| {
                    WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()
                })
                .transpose()
                .map_err(|e| e.to_string())?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(LaxVerifier { chain, provider }))
                .with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// The trusted roots: `sslrootcert`'s file, the system's store, or `~/.postgresql/root.crt`.
fn root_store(settings: &TlsSettings) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match settings.root_cert.as_deref() {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "sslrootcert=system: the system trust store has no certificates".into(),
                );
            }
        }
        Some(path) => add_pem_file(&mut roots, Path::new(path))?,
        None => {
            let default = std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".postgresql/root.crt"))
                .filter(|path| path.exists())
                .ok_or_else(|| {
                    format!(
                        "sslmode={} needs the server's root certificate: give sslrootcert=FILE \
                         (or sslrootcert=system) in the URL or --database-sslrootcert",
                        settings.mode.as_str()
                    )
                })?;
            add_pem_file(&mut roots, &default)?;
        }
    }
    Ok(roots)
}

/// Adds the certificates of the PEM file `path` to `roots`; an error names the file.
pub(super) fn add_pem_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let unreadable = |e: rustls::pki_types::pem::Error| {
        format!("cannot read the root certificate {}: {e}", path.display())
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(unreadable)?
        .collect::<Result<_, _>>()
        .map_err(unreadable)?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "the root certificate file {} holds no usable certificate",
            path.display()
        ));
    }
    Ok(())
}

/// The server certificate check of every mode but `verify-full` (which is rustls' own):
/// with a `chain`, the certificate must lead to a trusted root but its name is not compared
/// with the host (`verify-ca`, and `require` with a root); without, it is not checked at all
/// (`prefer`/`require`: encrypted, the server not authenticated, as libpq). Either way the
/// handshake's signatures are checked against the presented key.
#[derive(Debug)]
struct LaxVerifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LaxVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_out_of_urls_and_key_value_strings() {
        let (rest, settings) = split_tls_settings(
            "postgres://u:p@db.example:5432/shop?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5432/shop?application_name=x"
        );
        assert_eq!(settings.mode, SslMode::VerifyFull);
        assert_eq!(settings.root_cert.as_deref(), Some("/etc/ca.pem"));

        let (rest, settings) =
            split_tls_settings("host=db user=u sslmode=require dbname=shop").unwrap();
        assert_eq!(rest, "host=db user=u dbname=shop");
        assert_eq!(settings.mode, SslMode::Require);

        let (rest, settings) = split_tls_settings("postgres://u@h/db").unwrap();
        assert_eq!(
            (rest.as_str(), settings),
            ("postgres://u@h/db", TlsSettings::default())
        );
        assert!(split_tls_settings("postgres://h/db?sslmode=sometimes").is_err());
    }

    #[test]
    fn verifying_modes_need_a_readable_root() {
        let missing = TlsSettings {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/root.pem".into()),
        };
        let error = connector(&missing).err().unwrap();
        assert!(error.contains("/nonexistent/root.pem"), "{error}");
        let plain = TlsSettings {
            mode: SslMode::Disable,
            root_cert: None,
        };
        assert!(connector(&plain).unwrap().is_none());
    }
}
