//! TLS for the host and its daemons and clients (rustls with the `ring`
//! provider).
//!
//! Zero-config by default: the host makes a fresh self-signed certificate at
//! each start and prints its SHA-256 fingerprint; daemons pin that
//! fingerprint. A host given `--cert/--key` (e.g. CA-signed) can instead be
//! verified against the web PKI roots or a `--ca` file.

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The host's certificate chain and key.
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// `SHA256:<hex>` of the leaf certificate.
    pub fingerprint: String,
    pub self_signed: bool,
}

impl Identity {
    /// A fresh self-signed certificate for `names` (DNS names or IPs).
    pub fn self_signed(names: Vec<String>) -> anyhow::Result<Identity> {
        Ok(Self::self_signed_pem(names)?.0)
    }

    /// The same, with the certificate and key as PEM, to keep them.
    pub fn self_signed_pem(names: Vec<String>) -> anyhow::Result<(Identity, String, String)> {
        let ck = rcgen::generate_simple_self_signed(names).context("generating the certificate")?;
        let der = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let id = Identity {
            fingerprint: fingerprint(&der),
            certs: vec![der],
            key,
            self_signed: true,
        };
        Ok((id, ck.cert.pem(), ck.signing_key.serialize_pem()))
    }

    /// A certificate chain and key from PEM files.
    pub fn from_pem(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
        let certs = CertificateDer::pem_file_iter(cert)
            .with_context(|| format!("reading {}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing {}", cert.display()))?;
        let Some(leaf) = certs.first() else {
            bail!("{} holds no certificate", cert.display());
        };
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the key {}", key.display()))?;
        Ok(Identity {
            fingerprint: fingerprint(leaf),
            certs,
            key,
            self_signed: false,
        })
    }

    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .context("the certificate and key do not make a TLS configuration")?;
        Ok(Arc::new(config))
    }
}

/// `SHA256:` and the hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", hex::encode(Sha256::digest(der)))
}

/// Parse `SHA256:<hex>` (prefix optional, colons and case ignored).
pub fn parse_fingerprint(s: &str) -> anyhow::Result<[u8; 32]> {
    let t = s.trim();
    let t = t
        .strip_prefix("SHA256:")
        .or_else(|| t.strip_prefix("sha256:"))
        .unwrap_or(t);
    let hexed: String = t.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hexed.to_ascii_lowercase())
        .with_context(|| format!("fingerprint {s:?} is not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("fingerprint {s:?} is not 32 bytes (SHA-256)"))
}

/// How a daemon or client decides to trust the host.
pub enum Trust {
    /// The leaf certificate's SHA-256 must be this (zero-config hosts).
    Pinned([u8; 32]),
    /// A chain to these roots, with the host name checked: web PKI roots
    /// plus, when given, a CA file.
    Roots { ca_file: Option<std::path::PathBuf> },
}

/// What the pinned verifier saw, to explain a mismatch to the user.
#[derive(Default, Debug)]
pub struct Seen {
    pub fingerprint: Mutex<Option<String>>,
}

/// Accepts exactly one certificate, by its SHA-256, and still checks the
/// handshake signatures so the host proves it holds the matching key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    algs: WebPkiSupportedAlgorithms,
    seen: Arc<Seen>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Sha256::digest(end_entity.as_ref());
        if let Ok(mut s) = self.seen.fingerprint.lock() {
            *s = Some(fingerprint(end_entity));
        }
        if bool::from(got.as_slice().ct_eq(&self.pin)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The client-side TLS configuration, and what the verifier saw.
pub fn client_config(trust: &Trust) -> anyhow::Result<(Arc<ClientConfig>, Arc<Seen>)> {
    let provider = provider();
    let seen = Arc::new(Seen::default());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match trust {
        Trust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                algs: provider.signature_verification_algorithms,
                seen: seen.clone(),
            }))
            .with_no_client_auth(),
        Trust::Roots { ca_file } => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(f) = ca_file {
                for c in CertificateDer::pem_file_iter(f)
                    .with_context(|| format!("reading {}", f.display()))?
                {
                    let c = c.with_context(|| format!("parsing {}", f.display()))?;
                    roots
                        .add(c)
                        .with_context(|| format!("adding a CA from {}", f.display()))?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok((Arc::new(config), seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_common_spellings() {
        let id = Identity::self_signed(vec!["localhost".into()]).unwrap();
        let pin = parse_fingerprint(&id.fingerprint).unwrap();
        assert_eq!(fingerprint(&id.certs[0]), id.fingerprint);
        let colons: Vec<String> = pin.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), pin);
        assert!(parse_fingerprint("SHA256:abcd").is_err());
        assert!(parse_fingerprint("SHA256:zz").is_err());
        id.server_config().unwrap();
        client_config(&Trust::Pinned(pin)).unwrap();
        client_config(&Trust::Roots { ca_file: None }).unwrap();
    }
}
