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

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
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

/// Creates `path` with exactly `mode`, whatever the umask: never an existing file, never
/// through a symlink (`O_CREAT | O_EXCL | O_NOFOLLOW`), so a file or link planted there is
/// refused instead of followed or reused with its old mode.
fn write_new(path: &Path, data: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // the umask may have taken bits away from `mode`, never added: set it whole (fchmod)
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    f.write_all(data.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Makes `dir` if it does not exist, readable by its owner alone (whatever the umask).
fn create_key_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.symlink_metadata().is_ok() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Mode of the private keys: the owner's alone.
const KEY_MODE: u32 = 0o600;
/// Mode of the certificates: public, but writable by the owner alone.
const CERT_MODE: u32 = 0o644;

/// Writes a fresh CA certificate and the two peers' certificates and keys into `dir`
/// (created, mode 0700, if missing). Refuses when any of [`FILES`] is already there (or
/// anything else by that name, a symlink too): replacing a key set makes the certificates
/// already handed out stop working; [`keygen_replacing`] does it on purpose.
pub fn keygen(dir: &Path) -> Result<()> {
    keygen_into(dir, false)
}

/// [`keygen`], replacing an existing key set (`pagewire keygen --force`). Whatever sits at a
/// key path is removed, a symlink as itself (its target is left alone), and every file is
/// created afresh.
pub fn keygen_replacing(dir: &Path) -> Result<()> {
    keygen_into(dir, true)
}

fn keygen_into(dir: &Path, replace: bool) -> Result<()> {
    create_key_dir(dir)?;
    let present: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| dir.join(f).symlink_metadata().is_ok())
        .collect();
    if !present.is_empty() && !replace {
        bail!(
            "{} already holds {}: a new key set would stop the certificates already handed \
             out from working; use --force to replace it, or another folder",
            dir.display(),
            present.join(", ")
        );
    }
    // everything is generated before the first file is touched
    let files = generate_key_set()?;
    for name in present {
        let path = dir.join(name);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    for (name, data, mode) in &files {
        write_new(&dir.join(name), data, *mode)?;
    }
    Ok(())
}

/// The CA certificate and each peer's certificate and key: (file name, PEM, mode). Each
/// peer certificate carries its role as an extended key usage (the receiver's `serverAuth`,
/// the sender's `clientAuth`), so neither can stand in for the other.
fn generate_key_set() -> Result<Vec<(String, String, u32)>> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "pagewire migration CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let mut files = vec![("ca.pem".to_owned(), ca_cert.pem(), CERT_MODE)];
    for (who, name, role) in [
        (
            "receiver",
            RECEIVER_NAME,
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ("sender", SENDER_NAME, ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(vec![name.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![role];
        let cert = p.signed_by(&key, &issuer)?;
        files.push((format!("{who}.pem"), cert.pem(), CERT_MODE));
        files.push((format!("{who}.key"), key.serialize_pem(), KEY_MODE));
    }
    Ok(files)
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
