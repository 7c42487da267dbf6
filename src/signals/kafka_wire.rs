//! A connection to one Kafka broker that speaks requests spinscale builds itself (with the
//! `kafka-protocol` codecs): TLS and SASL as a `kafkaConnection` says, the API versions the broker
//! offers, and many requests written before their answers are read (a broker answers one
//! connection's requests in order).
//!
//! librdkafka reads the cluster's metadata. This exists for what it cannot do cheaply: committed
//! offsets of many groups, which it reads only through a client per group, and the log ends and
//! the tail of thousands of partitions, whose answers it matches to the asked partitions one
//! linear search each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use spinscale_core::spec::kafka_connection::{KafkaConnection, Mechanism, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;

use rustls_platform_verifier::BuilderVerifierExt;

use super::kafka_sasl::Scram;
use super::tls_files;

/// The largest answer read: a broker's frame that claims more is refused, not allocated.
const MAX_FRAME: usize = 64 << 20;
/// How many requests are written before their answers are read.
pub const PIPELINE: usize = 256;
/// How many bytes of requests are written before their answers are read: a broker answers one
/// request at a time, so a writer that never reads would fill both sides' buffers and stall.
const PIPELINE_BYTES: usize = 64 << 10;
/// How much of a broker's own text (error messages) goes into an error.
const SHOWN_TEXT: usize = 200;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An open, authenticated connection to one broker.
pub struct BrokerConnection {
    stream: Box<dyn Stream>,
    client_id: &'static str,
    next_correlation: i32,
    /// Each API key's highest version the broker accepts.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
}

impl BrokerConnection {
    /// Connects to `address` (`host:port`) as `client_id`, then TLS and SASL as `security` says,
    /// each step (and each request later) bounded by `timeout`. Errors never carry a secret.
    pub async fn open(
        address: &str,
        client_id: &'static str,
        security: Option<&KafkaConnection>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let tcp = within(timeout, TcpStream::connect(address))
            .await?
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let protocol = security.map(|s| s.security_protocol).unwrap_or_default();
        let stream: Box<dyn Stream> = match (protocol, security) {
            (Protocol::Ssl | Protocol::SaslSsl, Some(security)) => {
                let connector = TlsConnector::from(Arc::new(tls_config(security)?));
                let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
                let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                    .map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
                let tls = within(timeout, connector.connect(name, tcp))
                    .await?
                    .map_err(|e| format!("TLS handshake with {address} failed: {e}"))?;
                Box::new(tls)
            }
            _ => Box::new(tcp),
        };
        let mut connection = Self { stream, client_id, next_correlation: 0, versions: HashMap::new(), timeout };
        let offered: ApiVersionsResponse = connection.call(ApiVersionsRequest::default(), 0).await?;
        if offered.error_code != 0 {
            return Err(format!("{address} refused ApiVersions: {}", error_name(offered.error_code)));
        }
        connection.versions = offered.api_keys.iter().map(|k| (k.api_key, (k.min_version, k.max_version))).collect();
        if let (Protocol::SaslPlaintext | Protocol::SaslSsl, Some(security)) = (protocol, security) {
            connection.authenticate(security).await.map_err(|e| format!("SASL with {address}: {e}"))?;
        }
        Ok(connection)
    }

    /// The highest version of `R` both the broker and `ours` know, or `None`.
    pub fn version<R: Request>(&self, ours: std::ops::RangeInclusive<i16>) -> Option<i16> {
        let (min, max) = *self.versions.get(&R::KEY)?;
        let top = max.min(*ours.end());
        (top >= min.max(*ours.start())).then_some(top)
    }

    /// One request and its answer.
    pub async fn call<R: Request>(&mut self, request: R, version: i16) -> Result<R::Response, String> {
        let mut answers = self.call_many(vec![request], version).await?;
        answers.pop().ok_or_else(|| "no answer".to_string())
    }

    /// Many requests of one kind, written in chunks of [`PIPELINE`] before their answers are read.
    pub async fn call_many<R: Request>(&mut self, requests: Vec<R>, version: i16) -> Result<Vec<R::Response>, String> {
        let timeout = self.timeout;
        let mut answers = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let mut sent = Vec::new();
            let mut frames = BytesMut::new();
            while sent.len() < PIPELINE && frames.len() < PIPELINE_BYTES {
                let Some(request) = requests.next() else { break };
                let correlation = self.next_correlation;
                self.next_correlation = self.next_correlation.wrapping_add(1);
                encode_frame(&mut frames, request, version, correlation, self.client_id)?;
                sent.push(correlation);
            }
            // One deadline for the chunk: a broker that answers each request just in time
            // cannot stretch it to one timeout per request.
            let chunk = async {
                self.stream.write_all(&frames).await.map_err(|e| format!("write failed: {e}"))?;
                let mut answers = Vec::with_capacity(sent.len());
                for correlation in &sent {
                    let mut frame = read_frame(&mut self.stream).await?;
                    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
                        .map_err(|e| format!("undecodable response header: {e}"))?;
                    if header.correlation_id != *correlation {
                        return Err(format!("answer {} arrived for request {correlation}", header.correlation_id));
                    }
                    answers.push(
                        R::Response::decode(&mut frame, version).map_err(|e| format!("undecodable answer: {e}"))?,
                    );
                }
                Ok(answers)
            };
            answers.extend(within(timeout, chunk).await??);
        }
        Ok(answers)
    }

    async fn authenticate(&mut self, security: &KafkaConnection) -> Result<(), String> {
        let mechanism = security.sasl_mechanism.ok_or("no saslMechanism")?;
        let read = |field: &str, path: &Option<std::path::PathBuf>| -> Result<String, String> {
            let path = path.as_ref().ok_or_else(|| format!("no {field}"))?;
            super::kafka_security::read_secret(field, path)
        };
        let (username, password) =
            (read("usernameFile", &security.username_file)?, read("passwordFile", &security.password_file)?);
        let handshake = self.version::<SaslHandshakeRequest>(1..=1).ok_or("the broker has no SaslHandshake v1")?;
        let answer = self
            .call(
                SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.as_str())),
                handshake,
            )
            .await?;
        if answer.error_code != 0 {
            return Err(format!("mechanism {} refused: {}", mechanism.as_str(), error_name(answer.error_code)));
        }
        let version = self.version::<SaslAuthenticateRequest>(0..=1).ok_or("the broker has no SaslAuthenticate")?;
        match mechanism {
            Mechanism::Plain => {
                let token = format!("\0{username}\0{password}");
                self.exchange(Bytes::from(token), version).await.map(drop)
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let scram = Scram::new(mechanism, &username, &password)?;
                let server_first = self.exchange(scram.client_first(), version).await?;
                // PBKDF2 takes milliseconds of CPU: not on the runtime's workers.
                let (client_final, expected) = tokio::task::spawn_blocking(move || scram.client_final(&server_first))
                    .await
                    .map_err(|e| format!("SCRAM ended abnormally: {e}"))??;
                let server_final = self.exchange(client_final, version).await?;
                Scram::verify_server_final(&server_final, &expected)
            }
        }
    }

    async fn exchange(&mut self, auth_bytes: Bytes, version: i16) -> Result<Bytes, String> {
        let answer = self.call(SaslAuthenticateRequest::default().with_auth_bytes(auth_bytes), version).await?;
        if answer.error_code != 0 {
            let message = shown(answer.error_message.as_deref().unwrap_or_default());
            return Err(format!("authentication failed: {} {message}", error_name(answer.error_code)));
        }
        Ok(answer.auth_bytes)
    }
}

fn encode_frame<R: Request>(
    out: &mut BytesMut,
    request: R,
    version: i16,
    correlation: i32,
    client_id: &'static str,
) -> Result<(), String> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str(client_id)));
    let mut body = BytesMut::new();
    header.encode(&mut body, R::header_version(version)).map_err(|e| format!("cannot encode header: {e}"))?;
    request
        .encode(&mut body, version)
        .map_err(|e| format!("cannot encode {:?} v{version}: {e}", ApiKey::try_from(R::KEY)))?;
    let length = i32::try_from(body.len()).map_err(|_| "request too large".to_string())?;
    out.put_i32(length);
    out.put_slice(&body);
    Ok(())
}

async fn read_frame(stream: &mut Box<dyn Stream>) -> Result<Bytes, String> {
    let length = stream.read_i32().await.map_err(|e| format!("read failed: {e}"))?;
    let length = usize::try_from(length).map_err(|_| format!("negative frame length {length}"))?;
    if length > MAX_FRAME {
        return Err(format!("answer of {length} bytes is over the {MAX_FRAME}-byte limit"));
    }
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame).await.map_err(|e| format!("read failed: {e}"))?;
    if frame.len() < 4 {
        return Err("short frame".into());
    }
    Ok(Bytes::from(frame))
}

async fn within<T>(timeout: Duration, work: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(timeout, work).await.map_err(|_| format!("no answer within {timeout:?}"))
}

/// A broker's own text, cut to [`SHOWN_TEXT`] characters: it goes into errors KEDA shows.
pub fn shown(text: &str) -> String {
    match text.char_indices().nth(SHOWN_TEXT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// A Kafka error code's name (`NOT_COORDINATOR`), or the number when it is unknown.
pub fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code).map_or_else(|| "NONE".to_string(), |e| e.to_string())
}

fn tls_config(security: &KafkaConnection) -> Result<ClientConfig, String> {
    let builder = match &security.ca_file {
        Some(path) => ClientConfig::builder().with_root_certificates(tls_files::ca_roots(path)?),
        // The system's roots, as librdkafka and the HTTP client use; the bundled ones where the
        // system has none (a minimal image).
        None => match ClientConfig::builder().with_platform_verifier() {
            Ok(system) => system,
            Err(_) => ClientConfig::builder().with_root_certificates(tls_files::bundled_roots()?),
        },
    };
    match (&security.cert_file, &security.key_file) {
        (Some(cert), Some(key)) => {
            let (chain, key) = tls_files::identity(cert, key)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("certFile and keyFile: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}
