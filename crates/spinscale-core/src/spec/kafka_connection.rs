//! How spinscale authenticates to a Kafka cluster: a named connection in the config, with the
//! secrets in files (a mounted Secret). KEDA does not forward a TriggerAuthentication to an
//! external scaler (keda#2571), so trigger metadata only names the connection (`kafkaConnection`).
//!
//! Secrets are read from their files each time a client is created (a rotated Secret applies on
//! the next connection) and go nowhere but into librdkafka: not into `Debug`, errors, logs,
//! `/status` or `/metrics`. Every trigger is tenant input, so a connection also says where it may
//! be used: `bootstrapServers` (required; every broker a trigger lists must be one of them) and
//! `namespaces`.

use std::path::PathBuf;

use serde::Deserialize;

/// `security.protocol`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Protocol {
    /// `PLAINTEXT`: no TLS, no authentication (the default).
    #[default]
    Plaintext,
    /// `SSL`: TLS, optionally with a client certificate (mTLS).
    Ssl,
    /// `SASL_PLAINTEXT`: SASL authentication without TLS.
    SaslPlaintext,
    /// `SASL_SSL`: SASL authentication over TLS.
    SaslSsl,
}

/// `sasl.mechanism`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `PLAIN`: username and password sent as they are (safe only over TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`: salted challenge-response, SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`: salted challenge-response, SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    /// The name librdkafka and Kafka use for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// One entry of the config's `kafkaConnections`. Paths only: the secrets stay in their files.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KafkaConnection {
    /// `bootstrapServers`: the brokers (`host:port`) this connection is for (required). Every entry
    /// of a trigger's `bootstrapServers` must be one of them, so a tenant cannot send the
    /// connection's credentials to a broker of its own.
    #[serde(default)]
    pub bootstrap_servers: Vec<String>,
    /// `namespaces`: the namespaces whose ScaledObjects may use this connection. Empty: any.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// `securityProtocol`: TLS and/or SASL. Default `PLAINTEXT`.
    #[serde(default)]
    pub security_protocol: Protocol,
    /// `saslMechanism`: required with `SASL_PLAINTEXT` and `SASL_SSL`, refused otherwise.
    pub sasl_mechanism: Option<Mechanism>,
    /// `usernameFile`: file holding the SASL username; required with SASL.
    pub username_file: Option<PathBuf>,
    /// `passwordFile`: file holding the SASL password; required with SASL.
    pub password_file: Option<PathBuf>,
    /// `caFile`: PEM CA bundle that signed the brokers' certificates (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// `certFile`: PEM client certificate, for brokers that require mTLS.
    pub cert_file: Option<PathBuf>,
    /// `keyFile`: PEM private key of `certFile`; the two go together.
    pub key_file: Option<PathBuf>,
}

impl KafkaConnection {
    /// What clients need of this connection: it without `bootstrapServers` and `namespaces`, which
    /// only decide who may use it. A trigger's source carries this, so widening where a connection
    /// may be used restarts no cluster task.
    pub fn for_clients(&self) -> Self {
        Self { bootstrap_servers: Vec::new(), namespaces: Vec::new(), ..self.clone() }
    }

    /// The entries of a trigger's `bootstrapServers` (a comma list) this connection is not for.
    /// Host names compare without regard to case; the port must be the same.
    pub fn foreign_servers<'a>(&self, bootstrap_servers: &'a str) -> Vec<&'a str> {
        bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .filter(|s| !self.bootstrap_servers.iter().any(|allowed| allowed.trim().eq_ignore_ascii_case(s)))
            .collect()
    }

    /// Whether a ScaledObject of `namespace` may use this connection.
    pub fn serves_namespace(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }

    /// Every problem with this entry, each naming its field (`kafkaConnections.NAME.field`).
    pub fn problems(&self, name: &str) -> Vec<String> {
        let field = |f: &str| format!("kafkaConnections.{name}.{f}");
        let mut problems = Vec::new();
        if self.bootstrap_servers.is_empty() {
            problems.push(format!(
                "{}: is required: the brokers (host:port) this connection is for (every broker of a trigger's \
                 bootstrapServers must be one of them; every trigger is tenant input)",
                field("bootstrapServers")
            ));
        }
        for (i, server) in self.bootstrap_servers.iter().enumerate() {
            if !is_broker(server) {
                problems.push(format!("{}: {server:?} is not host:port", field(&format!("bootstrapServers[{i}]"))));
            }
        }
        problems.extend(super::prometheus_connection::namespace_problems(&self.namespaces, &field("namespaces")));
        let sasl = matches!(self.security_protocol, Protocol::SaslPlaintext | Protocol::SaslSsl);
        let tls = matches!(self.security_protocol, Protocol::Ssl | Protocol::SaslSsl);
        if sasl {
            if self.sasl_mechanism.is_none() {
                problems.push(format!("{}: is required with securityProtocol SASL_*", field("saslMechanism")));
            }
            for (f, path) in [("usernameFile", &self.username_file), ("passwordFile", &self.password_file)] {
                if path.is_none() {
                    problems.push(format!("{}: is required with securityProtocol SASL_*", field(f)));
                }
            }
        } else if self.sasl_mechanism.is_some() || self.username_file.is_some() || self.password_file.is_some() {
            problems.push(format!("{}: SASL settings need SASL_PLAINTEXT or SASL_SSL", field("securityProtocol")));
        }
        if !tls && (self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()) {
            problems.push(format!("{}: TLS files need SSL or SASL_SSL", field("securityProtocol")));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            problems.push(format!("{}: certFile and keyFile go together", field("certFile")));
        }
        let files = [
            ("usernameFile", &self.username_file),
            ("passwordFile", &self.password_file),
            ("caFile", &self.ca_file),
            ("certFile", &self.cert_file),
            ("keyFile", &self.key_file),
        ];
        for (f, path) in files {
            if let Some(path) = path
                && let Err(e) = std::fs::metadata(path)
            {
                problems.push(format!("{}: {}: {e}", field(f), path.display()));
            }
        }
        problems
    }
}

/// `host:port`: a host name, an IPv4 address or a bracketed IPv6 address, and a port number.
fn is_broker(server: &str) -> bool {
    let Some((host, port)) = server.rsplit_once(':') else { return false };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> KafkaConnection {
        serde_yaml_ng::from_str(yaml).expect("valid entry")
    }

    #[test]
    fn sasl_needs_a_mechanism_and_both_files_and_tls_files_need_tls() {
        let problems = parse("securityProtocol: SASL_SSL\n").problems("prod");
        assert!(
            problems.iter().any(|p| p.starts_with("kafkaConnections.prod.saslMechanism: is required")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.starts_with("kafkaConnections.prod.passwordFile: is required")));
        let problems = parse("securityProtocol: PLAINTEXT\ncaFile: /etc/ssl/ca.pem\n").problems("dev");
        assert!(problems.iter().any(|p| p.contains("dev.securityProtocol: TLS files need SSL")), "{problems:?}");
        let problems = parse("securityProtocol: SSL\ncertFile: /nonexistent/c.pem\n").problems("x");
        assert!(problems.iter().any(|p| p.contains("certFile and keyFile go together")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("x.certFile: /nonexistent/c.pem")), "{problems:?}");
        assert!(serde_yaml_ng::from_str::<KafkaConnection>("saslMechanism: GSSAPI\n").is_err());
    }

    #[test]
    fn brokers_are_required_and_a_trigger_may_name_only_those() {
        let problems = parse("securityProtocol: SSL\n").problems("prod");
        assert!(problems.iter().any(|p| p.starts_with("kafkaConnections.prod.bootstrapServers: is required")));
        let problems = parse(
            "securityProtocol: SSL\nbootstrapServers: [\"kafka:9092\", \"SSL://kafka:9093\", kafka, \"[::1]:9092\"]\n\
             namespaces: [shop, \"\"]\n",
        )
        .problems("prod");
        assert_eq!(
            problems,
            [
                "kafkaConnections.prod.bootstrapServers[1]: \"SSL://kafka:9093\" is not host:port",
                "kafkaConnections.prod.bootstrapServers[2]: \"kafka\" is not host:port",
                "kafkaConnections.prod.namespaces[1]: \"\" is not a namespace name",
            ]
        );
        let connection =
            parse("bootstrapServers: [\"kafka-0.kafka:9092\", \"kafka-1.kafka:9092\"]\nnamespaces: [shop]\n");
        assert!(connection.foreign_servers("kafka-0.kafka:9092, KAFKA-1.kafka:9092").is_empty());
        assert_eq!(connection.foreign_servers("kafka-0.kafka:9092,evil.example:9092"), ["evil.example:9092"]);
        assert_eq!(connection.foreign_servers("kafka-0.kafka:9093"), ["kafka-0.kafka:9093"], "another port");
        assert!(connection.serves_namespace("shop") && !connection.serves_namespace("default"));
        let settings = connection.for_clients();
        assert!(settings.bootstrap_servers.is_empty() && settings.serves_namespace("default"));
    }
}
