//! Every rule of KEDA's kafka scaler (docs/keda.md §4), measured end to end: records on librdkafka's
//! mock cluster (a real Kafka wire-protocol broker), commits as a consumer group makes them, and
//! the values a KEDA-like client reads over gRPC.

mod support;

use std::time::Duration;

use support::*;

const GROUP: &str = "workers";

/// A cluster holding `topics`, with `records[i]` produced to partition i of each topic.
fn cluster(topics: &[(&str, &[usize])]) -> Kafka {
    let spec: Vec<(&str, i32)> = topics.iter().map(|(t, records)| (*t, records.len() as i32)).collect();
    let kafka = Kafka::new(&spec);
    for (topic, records) in topics {
        for (partition, n) in records.iter().enumerate() {
            if *n > 0 {
                kafka.produce(topic, partition as i32, *n);
            }
        }
    }
    kafka
}

/// Polls as KEDA does with `metrics: separate` until the lag metric equals `lag`; returns activity.
async fn lag_settles_at(kafka: &Kafka, topic: &str, extra: &[(&str, &str)], lag: f64) -> bool {
    let bootstrap = kafka.bootstrap();
    let mut config = fast_config();
    config.targets.persistent_lag_after.0 = Duration::from_millis(800);
    let server = start_server(config).await;
    let mut client = connect(&server).await;
    let mut meta = kafka_meta(&bootstrap, GROUP, topic);
    meta.push(("metrics", "separate"));
    meta.extend_from_slice(extra);
    let r = so_ref("so", &meta);
    let poll = poll_until(&mut client, &r, Duration::from_secs(8), |p| {
        p.as_ref().is_ok_and(|p| p.values.get("spinscale-lag") == Some(&lag))
    })
    .await
    .unwrap();
    poll.active
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_with_latest_policy_counts_one_per_partition() {
    let kafka = cluster(&[("t", &[40, 0])]);
    assert!(lag_settles_at(&kafka, "t", &[("allowIdleConsumers", "true")], 2.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_with_latest_policy_and_scale_to_zero_on_invalid_offset_counts_zero() {
    let kafka = cluster(&[("t", &[40, 0])]);
    assert!(!lag_settles_at(&kafka, "t", &[("scaleToZeroOnInvalidOffset", "true")], 0.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_with_earliest_policy_counts_the_whole_log() {
    let kafka = cluster(&[("t", &[40, 2])]);
    let extra = [("offsetResetPolicy", "earliest"), ("allowIdleConsumers", "true")];
    assert!(lag_settles_at(&kafka, "t", &extra, 42.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_with_earliest_policy_and_scale_to_zero_on_invalid_offset_counts_zero() {
    let kafka = cluster(&[("t", &[40, 2])]);
    let extra = [("offsetResetPolicy", "earliest"), ("scaleToZeroOnInvalidOffset", "true")];
    assert!(!lag_settles_at(&kafka, "t", &extra, 0.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_is_capped_at_partitions_times_threshold_unless_idle_consumers_are_allowed() {
    let kafka = cluster(&[("t", &[100, 100])]);
    kafka.commit(GROUP, "t", 0, 0);
    kafka.commit(GROUP, "t", 1, 0);
    assert!(lag_settles_at(&kafka, "t", &[], 20.0).await);
    assert!(lag_settles_at(&kafka, "t", &[("allowIdleConsumers", "true")], 200.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_to_partitions_with_lag_caps_at_the_partitions_that_have_lag() {
    let kafka = cluster(&[("t", &[100, 3, 3])]);
    for p in 0..3 {
        kafka.commit(GROUP, "t", p, if p == 0 { 0 } else { 3 });
    }
    assert!(lag_settles_at(&kafka, "t", &[("limitToPartitionsWithLag", "true")], 10.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_persistent_lag_keeps_a_stuck_partition_active_but_out_of_the_metric() {
    let kafka = cluster(&[("t", &[50, 6])]);
    kafka.commit(GROUP, "t", 0, 2);
    kafka.commit(GROUP, "t", 1, 0);
    let extra = [("excludePersistentLag", "true"), ("allowIdleConsumers", "true")];
    // Both commits are new: everything counts. Once neither has moved for the window, nothing
    // drives 1→N, but the target stays active (KEDA's lagWithPersistent).
    assert!(lag_settles_at(&kafka, "t", &extra, 54.0).await);
    assert!(lag_settles_at(&kafka, "t", &extra, 0.0).await, "persistent lag still activates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_limitation_counts_only_the_listed_partitions() {
    let kafka = cluster(&[("t", &[5, 7, 11, 13])]);
    for p in 0..4 {
        kafka.commit(GROUP, "t", p, 0);
    }
    assert!(lag_settles_at(&kafka, "t", &[("partitionLimitation", "0,2-3")], 29.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_topic_means_every_topic_the_group_has_committed_on() {
    let kafka = cluster(&[("a", &[5]), ("b", &[7]), ("c", &[100])]);
    kafka.commit(GROUP, "a", 0, 0);
    kafka.commit(GROUP, "b", 0, 0);
    let extra = [("allowIdleConsumers", "true")];
    assert!(lag_settles_at(&kafka, "", &extra, 12.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_even_distribution_rounds_up_to_a_divisor_of_the_partitions() {
    let kafka = cluster(&[("t", &[25, 0, 0, 0, 0, 0])]);
    for p in 0..6 {
        kafka.commit(GROUP, "t", p, 0);
    }
    assert!(lag_settles_at(&kafka, "t", &[("ensureEvenDistributionOfPartitions", "true")], 30.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_lag_threshold_is_strict() {
    let kafka = cluster(&[("t", &[5])]);
    kafka.commit(GROUP, "t", 0, 0);
    assert!(
        !lag_settles_at(&kafka, "t", &[("activationLagThreshold", "5"), ("allowIdleConsumers", "true")], 5.0).await
    );
    assert!(lag_settles_at(&kafka, "t", &[("activationLagThreshold", "4"), ("allowIdleConsumers", "true")], 5.0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_on_an_empty_topic_with_earliest_policy_is_idle() {
    let kafka = cluster(&[("t", &[0, 0])]);
    assert!(!lag_settles_at(&kafka, "t", &[("offsetResetPolicy", "earliest")], 0.0).await);
}
