//! A test certificate authority (rcgen): a CA and leaves it signs, for the TLS and mTLS tests.

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// A CA: its PEM certificate and what signs its leaves.
pub struct Pki {
    pub ca: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca = params.self_signed(&key).expect("CA").pem();
        Self { ca, issuer: Issuer::new(params, key) }
    }

    /// A certificate for `names`, for `usage`, signed by this CA.
    pub fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>()).expect("params");
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf").pem();
        Leaf { cert, key: key.serialize_pem() }
    }
}
