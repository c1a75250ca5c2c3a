//! A test CA and a hub server certificate for 127.0.0.1 and localhost, made with rcgen.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

pub struct TestPki {
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Write `hub.crt` and `hub.key` into `dir`, signed by a fresh CA whose PEM is returned.
pub fn make(dir: &Path) -> TestPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Cairn test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();

    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(DnType::CommonName, "cairn-hub test");
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();

    let cert_path = dir.join("hub.crt");
    let key_path = dir.join("hub.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        cert: cert_path,
        key: key_path,
    }
}

/// An HTTPS client that trusts only the test CA (no built-in roots).
pub fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .https_only(true)
        .build()
        .unwrap()
}
