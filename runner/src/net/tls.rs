//! Mutual TLS on pre-shared certificates (rustls with the `ring` provider).
//!
//! `pagewire keygen DIR` makes a private CA and two leaf certificates signed by it: one for
//! the receiver (name `pagewire-receiver`) and one for the sender (`pagewire-sender`). Both
//! hosts get `ca.pem`; the receiver gets `receiver.pem` + `receiver.key`, the sender
//! `sender.pem` + `sender.key`. The CA's key is not kept, so nobody can mint another peer.
//! The receiver accepts only a client certificate from that CA for `pagewire-sender` (so a
//! receiver's own certificate cannot push a VM into another receiver), the sender only a
//! server certificate from it for `pagewire-receiver`. The roles are also in the
//! certificates' extended key usage, which webpki enforces where `keygen` wrote it. The handshake completes before the
//! destination reads a byte of the migration, so an unauthenticated peer never gets as far
//! as creating a VM; afterwards every record is authenticated, so tampering is detected.
//!
//! The codec's stream goes into TLS: compression happens before encryption.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::StreamOwned;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The receiver's certificate name.
pub const RECEIVER_NAME: &str = "pagewire-receiver";
/// The sender's certificate name.
pub const SENDER_NAME: &str = "pagewire-sender";

/// Files `keygen` writes.
pub const FILES: [&str; 5] = [
    "ca.pem",
    "receiver.pem",
    "receiver.key",
    "sender.pem",
    "sender.key",
];

fn write_private(path: &Path, data: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data.as_bytes())?;
    Ok(())
}

/// Writes a fresh CA certificate and the two peers' certificates and keys into `dir`.
pub fn keygen(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pagewire migration CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    for (who, name) in [("receiver", RECEIVER_NAME), ("sender", SENDER_NAME)] {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![name.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{who}.pem")), cert.pem())?;
        write_private(&dir.join(format!("{who}.key")), &key.serialize_pem())?;
    }
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let c: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if c.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(c)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("reading {}", path.display()))
}

fn roots(dir: &Path) -> Result<RootCertStore> {
    let mut r = RootCertStore::empty();
    for c in certs(&dir.join("ca.pem"))? {
        r.add(c).context("ca.pem is not a usable CA certificate")?;
    }
    Ok(r)
}

/// Accepts a client certificate only if webpki does (our CA, valid, usable for client
/// authentication) and it names the sender: a receiver's certificate is refused.
#[derive(Debug)]
struct SenderOnly(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for SenderOnly {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let ok = self.0.verify_client_cert(end_entity, intermediates, now)?;
        let cert = ParsedCertificate::try_from(end_entity)?;
        let sender = ServerName::try_from(SENDER_NAME)
            .map_err(|_| rustls::Error::General("bad sender name".into()))?;
        rustls::client::verify_server_name(&cert, &sender).map_err(|_| {
            rustls::Error::General(format!(
                "the client certificate is not the sender's (it does not name {SENDER_NAME})"
            ))
        })?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The receiver's TLS configuration from a `keygen` folder: our CA's sender only.
pub fn server_config(dir: &Path) -> Result<Arc<ServerConfig>> {
    let p = provider();
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(dir)?), p.clone())
        .build()
        .map_err(|e| anyhow!("client verifier: {e}"))?;
    let verifier = Arc::new(SenderOnly(webpki));
    let cfg = ServerConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&dir.join("receiver.pem"))?,
            key(&dir.join("receiver.key"))?,
        )
        .context("receiver.pem / receiver.key")?;
    Ok(Arc::new(cfg))
}

/// The sender's TLS configuration from a `keygen` folder.
pub fn client_config(dir: &Path) -> Result<Arc<ClientConfig>> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(dir)?)
        .with_client_auth_cert(
            certs(&dir.join("sender.pem"))?,
            key(&dir.join("sender.key"))?,
        )
        .context("sender.pem / sender.key")?;
    Ok(Arc::new(cfg))
}

/// Accepts TLS on `sock`; fails unless the peer presents a certificate from our CA.
pub fn accept<S: Read + Write>(
    sock: S,
    cfg: Arc<ServerConfig>,
) -> Result<StreamOwned<ServerConnection, S>> {
    let mut conn = ServerConnection::new(cfg)?;
    let mut sock = sock;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .context("TLS handshake with the sender failed")?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// Opens TLS over `sock` (a shaped stream or plain TCP) to the receiver.
pub fn connect<S: Read + Write>(
    sock: S,
    cfg: Arc<ClientConfig>,
) -> Result<StreamOwned<ClientConnection, S>> {
    let name = ServerName::try_from(RECEIVER_NAME)?.to_owned();
    let mut conn = ClientConnection::new(cfg, name)?;
    let mut sock = sock;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .context("TLS handshake with the receiver failed")?;
    }
    Ok(StreamOwned::new(conn, sock))
}
