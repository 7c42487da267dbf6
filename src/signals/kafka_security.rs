//! Applies a named Kafka connection (`kafkaConnections` in the config) to a librdkafka client:
//! the secrets are read from their files each time a client is created, so a rotated Secret
//! applies on the next connection, and go nowhere but into librdkafka.

use std::path::Path;

use rdkafka::config::ClientConfig;
use spinscale_core::spec::kafka_connection::{KafkaConnection, Protocol};

/// Adds the security settings of `connection` to a librdkafka client config, reading the secrets now.
pub fn apply(connection: &KafkaConnection, config: &mut ClientConfig) -> Result<(), String> {
    let protocol = match connection.security_protocol {
        Protocol::Plaintext => "plaintext",
        Protocol::Ssl => "ssl",
        Protocol::SaslPlaintext => "sasl_plaintext",
        Protocol::SaslSsl => "sasl_ssl",
    };
    config.set("security.protocol", protocol);
    if let Some(mechanism) = connection.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_str());
    }
    if let Some(path) = &connection.username_file {
        config.set("sasl.username", read_secret("usernameFile", path)?);
    }
    if let Some(path) = &connection.password_file {
        config.set("sasl.password", read_secret("passwordFile", path)?);
    }
    for (key, path) in [
        ("ssl.ca.location", &connection.ca_file),
        ("ssl.certificate.location", &connection.cert_file),
        ("ssl.key.location", &connection.key_file),
    ] {
        if let Some(path) = path {
            config.set(key, path.display().to_string());
        }
    }
    Ok(())
}

/// A secret file's content, without its trailing newline. Errors name the field and the file,
/// never the content.
pub fn read_secret(field: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{field} {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use spinscale_core::spec::kafka_connection::Mechanism;

    use super::*;

    #[test]
    fn secrets_go_into_librdkafka_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("user"), "svc-spinscale\n").unwrap();
        std::fs::write(dir.path().join("pass"), "s3cr3t-Pa55\n").unwrap();
        let connection = KafkaConnection {
            security_protocol: Protocol::SaslSsl,
            sasl_mechanism: Some(Mechanism::ScramSha512),
            username_file: Some(dir.path().join("user")),
            password_file: Some(dir.path().join("pass")),
            bootstrap_servers: vec!["kafka:9093".into()],
            ..KafkaConnection::default()
        };
        assert!(connection.problems("prod").is_empty());
        let mut config = ClientConfig::new();
        apply(&connection, &mut config).unwrap();
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(
            (config.get("sasl.username"), config.get("sasl.password")),
            (Some("svc-spinscale"), Some("s3cr3t-Pa55"))
        );
        assert!(!format!("{connection:?}").contains("s3cr3t"), "Debug shows paths only");
        let missing = KafkaConnection { password_file: Some(dir.path().join("gone")), ..connection };
        let err = apply(&missing, &mut ClientConfig::new()).unwrap_err();
        assert!(err.starts_with("passwordFile ") && err.contains("gone"), "{err}");
    }
}
