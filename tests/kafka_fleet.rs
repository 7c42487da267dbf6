//! Many Kafka apps on one cluster, each its own topic and consumer group, on librdkafka's mock
//! cluster: they share one offsets reader and one tail, so the server's threads do not
//! grow with them, and every app still reads its own group's lag, as apps join and leave.

mod support;

use std::time::Duration;

use support::*;

const APPS: usize = 100;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(Iterator::count).unwrap_or(0)
}

fn topic(i: usize) -> String {
    format!("orders-{i}")
}

fn group(i: usize) -> String {
    format!("workers-{i}")
}

/// App `i` has `i % 4` records its group has not read yet.
fn lag_of(i: usize) -> f64 {
    (i % 4) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_apps_share_one_reader_and_one_tail_and_each_reads_its_own_lag() {
    let names: Vec<String> = (0..APPS).map(topic).collect();
    let spec: Vec<(&str, i32)> = names.iter().map(|t| (t.as_str(), 1)).collect();
    let kafka = Kafka::new(&spec);
    for i in 0..APPS {
        kafka.produce(&topic(i), 0, 2 + i % 4);
        kafka.commit(&group(i), &topic(i), 0, 2);
    }
    let bootstrap = kafka.bootstrap();
    let mut config = fast_config();
    config.collectors.tail_fetch_wait.0 = Duration::from_millis(20);
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let refs: Vec<_> = (0..APPS)
        .map(|i| {
            let (t, g) = (topic(i), group(i));
            let mut meta = kafka_meta(&bootstrap, &g, &t);
            meta.push(("metrics", "separate"));
            so_ref(&format!("app-{i}"), &meta)
        })
        .collect();

    // Apps join one by one while the ones before them are being read.
    let before = threads();
    for (i, r) in refs.iter().enumerate() {
        let want = lag_of(i);
        poll_until(&mut client, r, Duration::from_secs(30), |p| {
            p.as_ref().is_ok_and(|p| p.values.get("spinscale-lag") == Some(&want))
        })
        .await
        .unwrap();
    }
    // Every app again, in one pass, now that all share the cycle.
    for (i, r) in refs.iter().enumerate() {
        let poll = keda_poll(&mut client, r).await.unwrap();
        assert_eq!(poll.values.get("spinscale-lag"), Some(&lag_of(i)), "app {i}: {poll:?}");
        assert_eq!(poll.active, lag_of(i) > 0.0, "app {i}: {poll:?}");
    }
    let grown = threads().saturating_sub(before);
    eprintln!("{APPS} Kafka apps on one cluster: {grown} more threads");
    // One metadata client (librdkafka: a few threads, plus one per broker), the offsets and tail
    // readers on the runtime, and tokio's blocking pool; a client per group would be ~9 threads
    // per app.
    assert!(grown <= 48, "{grown} threads for {APPS} apps: clients are not shared");

    // An idle app (no lag) wakes on a record through the shared tail.
    let idle = (0..APPS).find(|i| lag_of(*i) == 0.0).unwrap();
    let mut stream = client.stream_is_active(refs[idle].clone()).await.unwrap().into_inner();
    kafka.send(&topic(idle), 0);
    let pushed = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("pushed");
    assert_eq!(pushed.unwrap().map(|m| m.result), Some(true));

    // A group that catches up reads lag 0; the others are untouched.
    kafka.commit(&group(1), &topic(1), 0, 3);
    poll_until(&mut client, &refs[1], Duration::from_secs(30), |p| {
        p.as_ref().is_ok_and(|p| p.values.get("spinscale-lag") == Some(&0.0) && !p.active)
    })
    .await
    .unwrap();
    let other = keda_poll(&mut client, &refs[2]).await.unwrap();
    assert_eq!(other.values.get("spinscale-lag"), Some(&lag_of(2)));
}
