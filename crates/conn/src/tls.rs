//! rustls configuration with libpq's sslmode meanings:
//! prefer/require encrypt without checking the certificate (unless a root certificate is
//! given, which turns require into verify-ca, as in libpq); verify-ca checks the chain;
//! verify-full checks the chain and the host name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::error::Error;
use crate::spec::{ConnSpec, Host, SslMode};

impl ConnSpec {
    /// The rustls client configuration for this connection; `None` when TLS is off
    /// (sslmode=disable, or a unix socket, where libpq never uses TLS either).
    pub fn tls_config(&self) -> Result<Option<Arc<ClientConfig>>, Error> {
        if self.sslmode == SslMode::Disable || matches!(self.host, Host::Unix(_)) {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_err = |cause: String| Error::Tls {
            target: self.target(),
            cause,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err(e.to_string()))?;
        if self.sslmode == SslMode::VerifyFull && self.host_from_hostaddr {
            return Err(tls_err(
                "sslmode=verify-full needs a host name to check the server's certificate against: add host=<the name on the certificate> (hostaddr= only says where to connect), or use sslmode=verify-ca".into(),
            ));
        }
        let verify_chain = match self.sslmode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Require => self.sslrootcert.is_some(),
            _ => false,
        };
        let verifier: Arc<dyn ServerCertVerifier> = if verify_chain {
            let roots = Arc::new(self.root_store()?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| tls_err(e.to_string()))?;
            if self.sslmode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        } else {
            Arc::new(NoVerify(provider))
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match self.client_cert()? {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| self.cert_err(format!("cannot use the certificate and key: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }

    /// A TLS connector and the server name to present, for clients that do their own
    /// startup (the walsender client); `None` when TLS is off.
    pub fn tls_connector(
        &self,
    ) -> Result<Option<(tokio_rustls::TlsConnector, ServerName<'static>)>, Error> {
        let Some(config) = self.tls_config()? else {
            return Ok(None);
        };
        Ok(Some((
            tokio_rustls::TlsConnector::from(config),
            self.server_name()?,
        )))
    }

    pub(crate) fn server_name(&self) -> Result<ServerName<'static>, Error> {
        let name = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(_) => "localhost".to_string(),
        };
        ServerName::try_from(name).map_err(|e| Error::Tls {
            target: self.target(),
            cause: format!("host is not a valid TLS server name: {e}"),
        })
    }

    fn cert_err(&self, cause: String) -> Error {
        Error::ClientCert {
            target: self.target(),
            cause,
        }
    }

    /// The client certificate chain and key, when `sslcert` is set (explicitly or by
    /// ~/.postgresql/postgresql.crt existing). rustls offers it only if the server asks.
    fn client_cert(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, Error> {
        let Some(cert) = &self.sslcert else {
            return Ok(None);
        };
        let pem = std::fs::read(cert)
            .map_err(|e| self.cert_err(format!("cannot read sslcert {}: {e}", cert.display())))?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.cert_err(format!("sslcert {} is not PEM: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(self.cert_err(format!("sslcert {} holds no certificate", cert.display())));
        }
        let key = self.sslkey.as_ref().ok_or_else(|| {
            self.cert_err(format!(
                "sslcert {} is given but no private key: set sslkey= (or PGSSLKEY)",
                cert.display()
            ))
        })?;
        let meta = std::fs::metadata(key).map_err(|e| {
            self.cert_err(format!(
                "certificate {} present, but not its private key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
        if let Some(why) = key_access_problem(&meta) {
            return Err(self.cert_err(format!(
                "private key file {} {why}; run chmod 0600 {}",
                key.display(),
                key.display()
            )));
        }
        let pem = std::fs::read(key)
            .map_err(|e| self.cert_err(format!("cannot read sslkey {}: {e}", key.display())))?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
            self.cert_err(format!(
                "sslkey {} holds no usable private key ({e}); an encrypted key must be decrypted first (openssl pkey -in key -out key.plain)",
                key.display()
            ))
        })?;
        Ok(Some((chain, key)))
    }

    fn root_store(&self) -> Result<RootCertStore, Error> {
        let tls_err = |cause: String| Error::Tls {
            target: self.target(),
            cause,
        };
        let path = self.sslrootcert.as_ref().ok_or_else(|| {
            tls_err(format!(
                "sslmode={} needs the CA certificate: set sslrootcert=/path/to/ca.crt (or PGSSLROOTCERT, or ~/.postgresql/root.crt)",
                self.sslmode.as_str()
            ))
        })?;
        let pem = std::fs::read(path)
            .map_err(|e| tls_err(format!("cannot read sslrootcert {}: {e}", path.display())))?;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert
                .map_err(|e| tls_err(format!("sslrootcert {} is not PEM: {e}", path.display())))?;
            store
                .add(cert)
                .map_err(|e| tls_err(format!("sslrootcert {}: {e}", path.display())))?;
        }
        if store.is_empty() {
            return Err(tls_err(format!(
                "sslrootcert {} holds no certificate",
                path.display()
            )));
        }
        Ok(store)
    }
}

/// libpq's rule for key files: mode 0600 or less, or 0640 or less when owned by root (so a
/// group can share a system-wide key). Anything looser is refused, not just warned about.
fn key_access_problem(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode();
    if meta.uid() == 0 {
        (mode & 0o037 != 0).then_some(
            "has group or world access (a key owned by root may be at most u=rw,g=r, 0640)",
        )
    } else {
        (mode & 0o077 != 0).then_some("has group or world access (it must be at most u=rw, 0600)")
    }
}

/// verify-ca: the chain must lead to a trusted root; the name on the certificate is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// prefer/require: encryption without authentication of the server, as libpq does.
/// Handshake signatures are still checked so the session keys are sound.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
