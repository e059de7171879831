//! TLS for the hub's second listener and the door nodes' links (issue 12): TLS 1.3 only,
//! rustls with ring (no OpenSSL), over the loop's non-blocking sockets.
//!
//! - [`TlsStream`] drives a rustls connection over a mio `TcpStream` and is a
//!   `conn_io::ByteStream`, so the one connection type (`LineConn`) carries TLS the way it
//!   carries plain TCP: the line protocol inside is the same.
//! - [`Stream`] is either, for the tables that hold both (the hub's clients, the links).
//! - **Trust is a pinned certificate**, as with SSH host keys: a door node stores the SHA-256
//!   of the hub's certificate (`sitectl cert` prints it) and accepts that certificate and no
//!   other ([`client_config`]). Names and expiry do not matter, so the hub's self-signed
//!   certificate ([`load_or_make`]) needs no CA.

use crate::conn_io::ByteStream;
use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, Connection, DigitallySignedStruct, ServerConfig};
use rustls::{ServerConnection, SignatureScheme};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Plaintext rustls holds for one connection, at most, each way: beyond it a write waits
/// (the connection's own queue applies backpressure as for plain TCP).
const BUFFER_LIMIT: usize = 64 * 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls connection over a non-blocking TCP socket.
pub struct TlsStream {
    tcp: TcpStream,
    tls: Connection,
    /// The TCP stream ended.
    eof: bool,
    /// Why TLS failed (an alert, a certificate that is not the pinned one), for the log.
    failure: Option<String>,
}

impl TlsStream {
    /// The hub's side of a connection it accepted.
    pub fn server(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
        let mut tls = ServerConnection::new(config).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsStream::new(tcp, Connection::Server(tls)))
    }

    /// A link's side of a connection to a hub; the handshake goes with the first reads and
    /// writes.
    pub fn client(tcp: TcpStream, config: Arc<ClientConfig>, host: &str) -> io::Result<TlsStream> {
        // The pinned certificate decides, not the name; an address or a name both do.
        let name = ServerName::try_from(host.to_string())
            .unwrap_or_else(|_| ServerName::try_from("sited-hub").expect("a valid name"));
        let mut tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        tls.set_buffer_limit(Some(BUFFER_LIMIT));
        Ok(TlsStream::new(tcp, Connection::Client(tls)))
    }

    fn new(tcp: TcpStream, tls: Connection) -> TlsStream {
        TlsStream {
            tcp,
            tls,
            eof: false,
            failure: None,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Writes the TLS records waiting to go out; `WouldBlock` if the socket is full.
    fn push(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // 0: the peer said close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify (UnexpectedEof), or worse.
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = self.tls.process_new_packets() {
                self.failure = Some(describe(&e));
                // The alert that says why, best effort.
                let _ = self.push();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages to answer; the owner's flush retries what the socket
            // does not take now.
            match self.push() {
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                _ => {}
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Records already made go first; while they wait, take no more.
        self.push()?;
        let n = self.tls.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.push() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}

impl Source for TlsStream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.tcp.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.tcp.deregister(registry)
    }
}

impl ByteStream for TlsStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        // close_notify, then the TCP close (best effort: the answers before it are out).
        self.tls.send_close_notify();
        let _ = self.push();
        self.tcp.shutdown(std::net::Shutdown::Write)
    }

    fn pending_output(&self) -> bool {
        self.tls.wants_write()
    }

    fn failure(&self) -> Option<String> {
        self.failure.clone()
    }
}

/// A TLS error in words: rustls shows a verifier's own error with `Debug`; ours says what
/// to check.
pub fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
            format!("invalid peer certificate: {}", other.0)
        }
        e => e.to_string(),
    }
}

/// A connection that is plain TCP or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.tcp(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Source for Stream {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.register(registry, token, interests),
            Stream::Tls(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.reregister(registry, token, interests),
            Stream::Tls(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.deregister(registry),
            Stream::Tls(s) => s.deregister(registry),
        }
    }
}

impl ByteStream for Stream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Tls(s) => s.shutdown_write(),
        }
    }

    fn pending_output(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.pending_output(),
        }
    }

    fn failure(&self) -> Option<String> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(s) => s.failure(),
        }
    }
}

/// The hub's TLS setup: what it serves, and the fingerprint `sitectl cert` prints.
#[derive(Clone)]
pub struct HubCert {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the certificate's DER encoding, 64 lowercase hex characters.
    pub fingerprint: String,
    pub cert_file: PathBuf,
}

/// The hub's certificate and key: `tls-cert` and `tls-key` if set, else a self-signed pair
/// in `<state-dir>/tls/`, made at the first start (the key at mode 0600) and reused after.
pub fn load_or_make(
    cert: Option<&Path>,
    key: Option<&Path>,
    state_dir: &Path,
) -> Result<HubCert, String> {
    let (cert_file, key_file) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => {
            let dir = state_dir.join("tls");
            let files = (dir.join("cert.pem"), dir.join("key.pem"));
            if !files.0.exists() || !files.1.exists() {
                make_self_signed(&dir, &files.0, &files.1)?;
            }
            files
        }
    };
    // A key others can read is no secret; a group (ssl-cert) may share it.
    check_key_mode(&key_file)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("tls-cert {}: {e}", cert_file.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!(
            "tls-cert {}: no certificate in it",
            cert_file.display()
        ));
    };
    let fingerprint = crate::keys::sha256_hex(leaf.as_ref());
    let private = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| format!("tls-key {}: {e}", key_file.display()))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "tls-cert {} and tls-key {} do not go together: {e}",
                cert_file.display(),
                key_file.display()
            )
        })?;
    Ok(HubCert {
        config: Arc::new(config),
        fingerprint,
        cert_file,
    })
}

fn check_key_mode(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("tls-key {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o007 != 0 {
        return Err(format!(
            "tls-key {} has mode {:04o}: others must not read it (chmod 600 {})",
            path.display(),
            mode & 0o7777,
            path.display()
        ));
    }
    Ok(())
}

fn make_self_signed(dir: &Path, cert_file: &Path, key_file: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty() && h != "(none)")
        .unwrap_or_else(|| "sited".to_string());
    let made = rcgen::generate_simple_self_signed(vec![host.clone(), "localhost".into()])
        .map_err(|e| format!("making a self-signed certificate: {e}"))?;
    crate::store::write_atomic_mode(key_file, made.signing_key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| format!("cannot write {}: {e}", key_file.display()))?;
    crate::store::write_atomic(cert_file, made.cert.pem().as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", cert_file.display()))?;
    log::info!(
        "hub: made a self-signed TLS certificate for {host} in {} (door nodes pin its fingerprint: sitectl cert)",
        dir.display()
    );
    Ok(())
}

/// A link's TLS setup: TLS 1.3, and the hub's certificate must be the one whose SHA-256 is
/// `fingerprint`.
pub fn client_config(fingerprint: [u8; 32]) -> Arc<ClientConfig> {
    let provider = provider();
    let pinned = Pinned {
        fingerprint,
        provider: provider.clone(),
    };
    let config = match ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
    {
        Ok(builder) => builder,
        Err(e) => unreachable!("ring supports TLS 1.3: {e}"),
    }
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(pinned))
    .with_no_client_auth();
    Arc::new(config)
}

/// Accepts the one certificate whose SHA-256 is pinned; the handshake's signatures are
/// checked as usual, so only the holder of that certificate's key gets through.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

/// The hub showed another certificate than the pinned one.
#[derive(Debug)]
struct NotPinned {
    got: String,
    want: String,
}

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the hub's certificate has fingerprint {}, not the pinned {} ([link] fingerprint)",
            self.got, self.want
        )
    }
}

impl std::error::Error for NotPinned {}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = crate::keys::sha256_hex(end_entity.as_ref());
        let want = crate::keys::to_hex(&self.fingerprint);
        if got == want {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotPinned {
                    got,
                    want,
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
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
    fn a_self_signed_certificate_is_made_once_with_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let first = load_or_make(None, None, dir.path()).expect("made");
        let again = load_or_make(None, None, dir.path()).expect("loaded");
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 64);
        let key = dir.path().join("tls/key.pem");
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_make(None, None, dir.path()).err().expect("refused");
        assert!(err.contains("has mode 0644"), "{err}");
    }
}
