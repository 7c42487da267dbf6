//! The fleet's Kafka: the real `tansu` broker (in-memory storage) behind a relay that counts
//! every Kafka request by client and API, or librdkafka's mock cluster where tansu is missing or
//! the count is too large for it.
//!
//! tansu advertises the relay's address, so every connection (spinscale's metadata, offsets,
//! log-end and tail readers, the bench's producer) goes through it after the first Metadata. The
//! relay reads each request's header as it passes (a 4-byte size, then API key, version,
//! correlation id and client id) and forwards the bytes unchanged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use spinscale_testkit::{free_port, tansu_binary};

/// The bench's own Kafka clients call themselves this; the count leaves them out.
pub const BENCH_CLIENT_ID: &str = "fleet-bench";

/// Requests seen, by client id and API key.
pub type Counts = BTreeMap<(String, i16), u64>;

/// A Kafka cluster under the fleet.
pub struct Kafka {
    /// What spinscale's triggers name as `bootstrapServers`.
    pub bootstrap: String,
    /// Requests through the relay (tansu only).
    pub tally: Option<Arc<Mutex<Counts>>>,
    broker: Broker,
}

enum Broker {
    Tansu { child: Child, relay: JoinHandle<()> },
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl Kafka {
    /// tansu behind a counting relay, if its binary is found.
    pub async fn tansu() -> anyhow::Result<Option<Self>> {
        let Some(binary) = tansu_binary() else { return Ok(None) };
        let relay_listener = TcpListener::bind("127.0.0.1:0").await?;
        let relay_addr = relay_listener.local_addr()?;
        let port = free_port()?;
        let listen = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args(["broker", "--listener-url", &listen])
            .args(["--advertised-listener-url", &format!("tcp://{relay_addr}")])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let upstream = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while TcpStream::connect(upstream).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("tansu did not listen on {upstream} within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tally = Arc::new(Mutex::new(Counts::new()));
        let relay = tokio::spawn(relay(relay_listener, upstream, tally.clone()));
        Ok(Some(Self { bootstrap: relay_addr.to_string(), tally: Some(tally), broker: Broker::Tansu { child, relay } }))
    }

    /// librdkafka's mock cluster of one broker, in this process (no request count).
    pub fn mock() -> anyhow::Result<Self> {
        let mock = MockCluster::new(1).context("mock Kafka cluster")?;
        Ok(Self { bootstrap: mock.bootstrap_servers(), tally: None, broker: Broker::Mock(mock) })
    }

    /// What this cluster is, for the report.
    pub fn name(&self) -> &'static str {
        match self.broker {
            Broker::Tansu { .. } => "tansu 0.6",
            Broker::Mock(_) => "mock cluster",
        }
    }

    /// Creates every topic with one partition.
    pub async fn create_topics(&self, names: &[String]) -> anyhow::Result<()> {
        match &self.broker {
            Broker::Mock(mock) => {
                for name in names {
                    mock.create_topic(name, 1, 1)?;
                }
            }
            Broker::Tansu { .. } => {
                let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
                for chunk in names.chunks(100) {
                    let topics: Vec<NewTopic<'_>> =
                        chunk.iter().map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1))).collect();
                    let created = admin.create_topics(&topics, &options).await.context("CreateTopics")?;
                    if let Some(Err((topic, e))) = created.into_iter().find(Result::is_err) {
                        bail!("creating topic {topic} on tansu: {e}");
                    }
                }
            }
        }
        Ok(())
    }

    /// A producer that sends each record at once (`linger.ms=0`), with every topic's metadata
    /// already fetched, as a running app's producer has it.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        let producer: FutureProducer = self.client_config().set("linger.ms", "0").create()?;
        producer.client().fetch_metadata(None, Duration::from_secs(30))?;
        Ok(producer)
    }

    /// The broker's process id, if it is a process of its own (tansu).
    pub fn pid(&self) -> Option<u32> {
        match &self.broker {
            Broker::Tansu { child, .. } => Some(child.id()),
            Broker::Mock(_) => None,
        }
    }

    /// Requests counted so far (empty without a relay).
    pub fn counts(&self) -> Counts {
        self.tally.as_ref().and_then(|t| t.lock().ok().map(|c| c.clone())).unwrap_or_default()
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap).set("client.id", BENCH_CLIENT_ID);
        config
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if let Broker::Tansu { child, relay } = &mut self.broker {
            relay.abort();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// spinscale's requests between two counts: the total and each API's share, most first.
pub fn spinscale_requests(before: &Counts, after: &Counts) -> (u64, Vec<(&'static str, u64)>) {
    let mut by_api: BTreeMap<i16, u64> = BTreeMap::new();
    for ((client, api), n) in after {
        if client.starts_with("spinscale") {
            let was = before.get(&(client.clone(), *api)).copied().unwrap_or(0);
            *by_api.entry(*api).or_default() += n.saturating_sub(was);
        }
    }
    let mut shares: Vec<(&'static str, u64)> = by_api.into_iter().map(|(api, n)| (api_name(api), n)).collect();
    shares.sort_by_key(|s| std::cmp::Reverse(s.1));
    (shares.iter().map(|(_, n)| n).sum(), shares)
}

fn api_name(key: i16) -> &'static str {
    match key {
        0 => "Produce",
        1 => "Fetch",
        2 => "ListOffsets",
        3 => "Metadata",
        8 => "OffsetCommit",
        9 => "OffsetFetch",
        10 => "FindCoordinator",
        11 => "JoinGroup",
        12 => "Heartbeat",
        17 => "SaslHandshake",
        18 => "ApiVersions",
        19 => "CreateTopics",
        15 => "DescribeGroups",
        16 => "ListGroups",
        22 => "InitProducerId",
        32 => "DescribeConfigs",
        60 => "DescribeCluster",
        71 => "GetTelemetrySubscriptions",
        72 => "PushTelemetry",
        _ => "other",
    }
}

/// Relays every connection to `upstream`, counting the requests clients send.
async fn relay(listener: TcpListener, upstream: SocketAddr, tally: Arc<Mutex<Counts>>) {
    while let Ok((client, _)) = listener.accept().await {
        let tally = tally.clone();
        tokio::spawn(async move {
            let _ = relay_one(client, upstream, &tally).await;
        });
    }
}

async fn relay_one(client: TcpStream, upstream: SocketAddr, tally: &Mutex<Counts>) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let answers = tokio::io::copy(&mut server_read, &mut client_write);
    let requests = async {
        let mut frames = Frames::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await?;
            if n == 0 {
                return server_write.shutdown().await;
            }
            let mut seen = Vec::new();
            frames.feed(&buf[..n], &mut |client, api| seen.push((client.to_string(), api)));
            if let Ok(mut counts) = tally.lock() {
                for key in seen {
                    *counts.entry(key).or_default() += 1;
                }
            }
            server_write.write_all(&buf[..n]).await?;
        }
    };
    tokio::select! {
        done = answers => done.map(drop),
        done = requests => done,
    }
}

/// Kafka request frames in a byte stream, read as they pass: each is a 4-byte big-endian size,
/// then (request header v1+) API key, API version, correlation id and a nullable client id.
#[derive(Default)]
struct Frames {
    /// Bytes of the current frame still to pass after its header.
    skip: usize,
    /// The start of a frame read so far.
    head: Vec<u8>,
}

impl Frames {
    /// Reads `data`, calling `seen(client_id, api_key)` for every request whose header it completes.
    fn feed(&mut self, mut data: &[u8], seen: &mut impl FnMut(&str, i16)) {
        // size (4) + api key (2) + version (2) + correlation id (4) + client id length (2)
        const FIXED: usize = 14;
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let wanted = if self.head.len() < FIXED { FIXED } else { FIXED + self.id_len() };
            let n = (wanted - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
            // The header is whole once the client id (known after the fixed part) is in too.
            if self.head.len() < FIXED || self.head.len() < FIXED + self.id_len() {
                continue;
            }
            let size = u32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]) as usize;
            let api = i16::from_be_bytes([self.head[4], self.head[5]]);
            seen(&String::from_utf8_lossy(&self.head[FIXED..]), api);
            // The size counts everything after itself.
            self.skip = (size + 4).saturating_sub(self.head.len());
            self.head.clear();
        }
    }

    fn id_len(&self) -> usize {
        usize::try_from(i16::from_be_bytes([self.head[12], self.head[13]])).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(api: i16, client: Option<&str>, body: usize) -> Vec<u8> {
        let mut rest = Vec::new();
        rest.extend_from_slice(&api.to_be_bytes());
        rest.extend_from_slice(&3i16.to_be_bytes());
        rest.extend_from_slice(&7i32.to_be_bytes());
        match client {
            Some(id) => {
                rest.extend_from_slice(&(id.len() as i16).to_be_bytes());
                rest.extend_from_slice(id.as_bytes());
            }
            None => rest.extend_from_slice(&(-1i16).to_be_bytes()),
        }
        rest.extend(std::iter::repeat_n(0xAB, body));
        let mut out = (rest.len() as u32).to_be_bytes().to_vec();
        out.extend(rest);
        out
    }

    #[test]
    fn every_request_is_counted_however_the_stream_is_cut() {
        let mut stream = frame(1, Some("spinscale-tail"), 300);
        stream.extend(frame(9, Some("spinscale-offsets"), 0));
        stream.extend(frame(18, None, 5));
        stream.extend(frame(3, Some("spinscale"), 70_000));
        for cut in [1, 2, 3, 13, 14, 15, 100, 64 * 1024] {
            let mut frames = Frames::default();
            let mut seen = Vec::new();
            for piece in stream.chunks(cut) {
                frames.feed(piece, &mut |client, api| seen.push((client.to_string(), api)));
            }
            let want = [("spinscale-tail", 1), ("spinscale-offsets", 9), ("", 18), ("spinscale", 3)];
            let want: Vec<(String, i16)> = want.iter().map(|(c, a)| (c.to_string(), *a)).collect();
            assert_eq!(seen, want, "cut every {cut} bytes");
        }
    }
}
