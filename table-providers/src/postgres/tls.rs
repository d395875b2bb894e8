//! TLS to PostgreSQL with libpq's `sslmode`s, on rustls (the one TLS stack of the build)
//! through `tokio-postgres-rustls`.
//!
//! The driver's own `SslMode` only says whether TLS is tried (disable, prefer, require);
//! what is checked is the rustls verifier's business:
//!
//! | sslmode | tried | server certificate |
//! |---|---|---|
//! | disable | never | - |
//! | prefer (default) | if the server offers it; a failed handshake falls back to plain | not checked |
//! | require | always | not checked; with `sslrootcert`, as verify-ca (as libpq) |
//! | verify-ca | always | signed by `sslrootcert` |
//! | verify-full | always | signed by `sslrootcert` and naming the host connected to |

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode as DriverMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const SPELLINGS: [&'static str; 5] =
        ["disable", "prefer", "require", "verify-ca", "verify-full"];

    fn parse(who: &str, s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::InvalidInput(format!(
                    "{who}: sslmode '{other}' is not one of {}",
                    Self::SPELLINGS.join(", ")
                )));
            }
        })
    }
}

/// A source's TLS settings.
#[derive(Debug, Clone)]
pub struct Tls {
    pub mode: SslMode,
    root: Option<PathBuf>,
}

impl Tls {
    /// `who` names the connection in errors: "source 'crm'", "[catalog]".
    pub fn parse(who: &str, mode: Option<&str>, root: Option<&str>) -> Result<Self> {
        let mut mode = mode.map_or(Ok(SslMode::Prefer), |m| SslMode::parse(who, m))?;
        // As libpq: require with a root certificate checks the chain (verify-ca).
        if mode == SslMode::Require && root.is_some() {
            mode = SslMode::VerifyCa;
        }
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root.is_none() {
            return Err(Error::InvalidInput(format!(
                "{who}: sslmode {} needs sslrootcert, the CA certificate (PEM) the server's certificate must be signed by",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                }
            )));
        }
        Ok(Tls {
            mode,
            root: root.map(PathBuf::from),
        })
    }

    /// What the driver is told: whether to try TLS.
    pub fn driver_mode(&self) -> DriverMode {
        match self.mode {
            SslMode::Disable => DriverMode::Disable,
            SslMode::Prefer => DriverMode::Prefer,
            _ => DriverMode::Require,
        }
    }

    /// The connector, with the verifier the mode asks for.
    pub fn connector(&self, who: &str) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?;
        let signatures = provider.signature_verification_algorithms;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(Verifier {
                cert: CertCheck::AcceptAny,
                signatures,
            }),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let path = self.root.as_ref().expect("checked in parse");
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|c| c.collect::<std::result::Result<Vec<_>, _>>())
                    .map_err(|e| {
                        Error::InvalidInput(format!(
                            "{who}: sslrootcert {} cannot be read as PEM certificates: {e}",
                            path.display()
                        ))
                    })?;
                for c in certs {
                    roots.add(c).map_err(|e| {
                        Error::InvalidInput(format!(
                            "{who}: sslrootcert {} holds a certificate that is not a CA: {e}",
                            path.display()
                        ))
                    })?;
                }
                if roots.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "{who}: sslrootcert {} holds no certificate",
                        path.display()
                    )));
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?;
                if self.mode == SslMode::VerifyCa {
                    Arc::new(Verifier {
                        cert: CertCheck::ChainOnly(webpki),
                        signatures,
                    })
                } else {
                    webpki
                }
            }
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The TLS error under a driver error, if the failure was the handshake's.
pub fn tls_error_under(e: &tokio_postgres::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = cur {
        if let Some(t) = inner.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        // tokio-rustls wraps the rustls error in an io::Error whose source() skips it.
        if let Some(io) = inner.downcast_ref::<std::io::Error>()
            && let Some(t) = io.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>())
        {
            return Some(t.to_string());
        }
        cur = inner.source();
    }
    None
}

/// How [`Verifier`] takes the server's certificate.
#[derive(Debug)]
enum CertCheck {
    /// `require` and `prefer`: encrypted, the certificate not checked.
    AcceptAny,
    /// `verify-ca`: the chain must lead to the root; the name is not checked.
    ChainOnly(Arc<rustls::client::WebPkiServerVerifier>),
}

/// The verifier of every mode but `verify-full` (which uses `WebPkiServerVerifier` as it
/// is). The modes differ only in the certificate check: the handshake's signatures are
/// always checked, with the provider's algorithms, exactly as `WebPkiServerVerifier` checks
/// them (the algorithms it is built with are the provider's).
#[derive(Debug)]
struct Verifier {
    cert: CertCheck,
    signatures: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let webpki = match &self.cert {
            CertCheck::AcceptAny => return Ok(ServerCertVerified::assertion()),
            CertCheck::ChainOnly(webpki) => webpki,
        };
        // rustls checks the chain before the name, so a name error means the chain was good.
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
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
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.signatures)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.signatures)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.supported_schemes()
    }
}

/// A URL's `sslmode` and `sslrootcert` query parameters, taken out (the driver's parser
/// knows only disable, prefer and require, and no sslrootcert).
pub fn split_url(url: &str) -> (String, Option<String>, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None, None);
    };
    let (mut mode, mut root) = (None, None);
    // The other parameters are kept as written: decoding and encoding them again would
    // turn `options=-c%20x` into `-c+x`, which the driver does not read as a space.
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = || {
                url::form_urlencoded::parse(format!("v={v}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
            };
            match k {
                "sslmode" => mode = v(),
                "sslrootcert" => root = v(),
                _ => return !pair.is_empty(),
            }
            false
        })
        .collect();
    if mode.is_none() && root.is_none() {
        return (url.to_string(), None, None);
    }
    if kept.is_empty() {
        (base.to_string(), mode, root)
    } else {
        (format!("{base}?{}", kept.join("&")), mode, root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out() {
        let (u, m, r) =
            split_url("postgres://a@h:5/db?sslmode=verify-full&sslrootcert=/ca.pem&x=1");
        assert_eq!(u, "postgres://a@h:5/db?x=1");
        assert_eq!(m.as_deref(), Some("verify-full"));
        assert_eq!(r.as_deref(), Some("/ca.pem"));
        let (u, m, _) = split_url("postgres://a@h/db?sslmode=require");
        assert_eq!(
            (u.as_str(), m.as_deref()),
            ("postgres://a@h/db", Some("require"))
        );
        assert_eq!(split_url("postgres://a@h/db").0, "postgres://a@h/db");
        // Regression: the other parameters were decoded and encoded again (%20 -> +).
        let (u, m, r) = split_url(
            "postgres://a@h1,h2/db?options=-c%20search_path%3Dx&sslrootcert=%2Fetc%2Fca.pem&sslmode=verify-ca",
        );
        assert_eq!(u, "postgres://a@h1,h2/db?options=-c%20search_path%3Dx");
        assert_eq!(m.as_deref(), Some("verify-ca"));
        assert_eq!(r.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn modes_parse_and_verify_modes_need_a_root() {
        assert_eq!(Tls::parse("s", None, None).unwrap().mode, SslMode::Prefer);
        let with_root = Tls::parse("s", Some("require"), Some("/ca.pem")).unwrap();
        assert_eq!(
            with_root.mode,
            SslMode::VerifyCa,
            "require with a root checks the chain"
        );
        let e = Tls::parse("s", Some("verify-full"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs sslrootcert"), "{e}");
        let e = Tls::parse("s", Some("allow"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("disable, prefer, require, verify-ca, verify-full"),
            "{e}"
        );
    }
}
