//! KEDA's `kafka` credentials → a `kafkaConnections` entry (`spinscale_core::spec::kafka_connection`).
//!
//! | KEDA (TriggerAuthentication, or `sasl`/`tls` in the trigger) | spinscale connection |
//! |---|---|
//! | `tls: enable` / `disable` with `sasl` | `securityProtocol: SSL`, `SASL_SSL`, `SASL_PLAINTEXT`, `PLAINTEXT` |
//! | `sasl: plaintext`, `scram_sha256`, `scram_sha512` | `saslMechanism: PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` |
//! | `username`, `password` | `usernameFile`, `passwordFile` |
//! | `ca`, `cert`, `key` | `caFile`, `certFile`, `keyFile` |
//! | the trigger's `bootstrapServers`, the TriggerAuthentication's namespace | `bootstrapServers`, `namespaces` (`Entry`) |
//!
//! `gssapi`, `oauthbearer`, MSK IAM and an encrypted key (`keyPassword`) are refused: spinscale's
//! Kafka client does not speak them.

use super::{Connection, FileRef, Index, Mapped, TriggerAuth, TriggerView};

const SASL: &str = "sasl";
const TLS: &str = "tls";
const TOKEN_PROVIDER: &str = "saslTokenProvider";

/// An entry of `kafkaConnections`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KafkaConnection {
    pub security_protocol: &'static str,
    pub sasl_mechanism: Option<&'static str>,
    pub username: Option<FileRef>,
    pub password: Option<FileRef>,
    pub ca: Option<FileRef>,
    pub cert: Option<FileRef>,
    pub key: Option<FileRef>,
    /// What KEDA used, e.g. `sasl plaintext, tls enable`, for the skeleton's comment.
    pub summary: String,
}

impl KafkaConnection {
    pub fn files(&self) -> Vec<&FileRef> {
        [&self.username, &self.password, &self.ca, &self.cert, &self.key].into_iter().flatten().collect()
    }
}

/// A setting KEDA reads from the trigger or the TriggerAuthentication, not both.
fn setting(view: &TriggerView<'_>, auth: &TriggerAuth, index: &Index, key: &str) -> Result<Option<String>, String> {
    match (view.meta(key), auth.has(key)) {
        (Some(_), true) => {
            Err(format!("{key} is set in both the trigger's metadata and {}: KEDA refuses that; keep one", auth.label))
        }
        (Some(v), false) => Ok(Some(v.to_string())),
        (None, _) => index.literal(auth, key),
    }
}

pub(super) fn map(view: &TriggerView<'_>, auth: Option<&TriggerAuth>, index: &Index) -> Result<Option<Mapped>, String> {
    let Some(auth) = auth else { return Ok(None) };
    if let Some(identity) = &auth.pod_identity {
        return Err(format!(
            "{}: spec.podIdentity ({}): spinscale's Kafka client has no cloud identity (MSK IAM, Event Hubs OAuth); \
             use SASL/SCRAM or PLAIN credentials in a Secret",
            auth.label, identity.provider
        ));
    }
    let sasl = setting(view, auth, index, SASL)?.unwrap_or_else(|| "none".into());
    let tls = setting(view, auth, index, TLS)?.unwrap_or_else(|| "disable".into());
    let mechanism = match sasl.as_str() {
        "none" | "" => None,
        "plaintext" => Some("PLAIN"),
        "scram_sha256" => Some("SCRAM-SHA-256"),
        "scram_sha512" => Some("SCRAM-SHA-512"),
        other => {
            return Err(format!(
                "sasl {other:?}: spinscale's Kafka client speaks PLAIN (plaintext), SCRAM-SHA-256 and SCRAM-SHA-512, \
                 not GSSAPI, OAUTHBEARER or MSK IAM"
            ));
        }
    };
    if let Some(provider) = setting(view, auth, index, TOKEN_PROVIDER)?.filter(|p| p != "bearer") {
        return Err(format!("saslTokenProvider {provider:?}: spinscale's Kafka client has no MSK IAM"));
    }
    let tls = match tls.as_str() {
        "enable" => true,
        "disable" | "" => false,
        other => return Err(format!("tls {other:?} is neither enable nor disable")),
    };
    let mut used: Vec<&str> = vec![SASL, TLS, TOKEN_PROVIDER];
    let mut c = KafkaConnection {
        security_protocol: match (mechanism.is_some(), tls) {
            (false, false) => "PLAINTEXT",
            (false, true) => "SSL",
            (true, false) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        },
        sasl_mechanism: mechanism,
        username: None,
        password: None,
        ca: None,
        cert: None,
        key: None,
        summary: format!("sasl {sasl}, tls {}", if tls { "enable" } else { "disable" }),
    };
    if mechanism.is_some() {
        for (parameter, file) in [("username", "username"), ("password", "password")] {
            let found = auth.file(parameter, file)?.ok_or_else(|| {
                format!("{} has no parameter {parameter}, which sasl {sasl} needs (KEDA would fail too)", auth.label)
            })?;
            if parameter == "username" {
                c.username = Some(found);
            } else {
                c.password = Some(found);
            }
        }
        used.extend(["username", "password"]);
    }
    if tls {
        if auth.has("keyPassword") {
            return Err(format!(
                "{} gives keyPassword: spinscale reads unencrypted keys only; store the key decrypted in the Secret \
                 (openssl pkey -in key.pem -out key.pem)",
                auth.label
            ));
        }
        c.ca = auth.file("ca", "ca.crt")?;
        c.cert = auth.file("cert", "tls.crt")?;
        c.key = auth.file("key", "tls.key")?;
        if c.cert.is_some() != c.key.is_some() {
            return Err(format!(
                "{} gives only one of cert and key: they go together (KEDA would fail too)",
                auth.label
            ));
        }
        used.extend(["ca", "cert", "key"]);
    }
    let notes = auth
        .unused(&used)
        .map(|p| {
            format!(
                "{}: {} parameter {p} dropped: KEDA's kafka scaler does not use it with sasl {sasl}, tls {}",
                view.field,
                auth.label,
                if tls { "enable" } else { "disable" }
            )
        })
        .collect();
    let connection = (mechanism.is_some() || tls).then_some(Connection::Kafka(c));
    Ok(Some(Mapped { connection, consumed: vec![SASL, TLS, TOKEN_PROVIDER], notes }))
}
