//! Activator routes belong to the live targets that carry them: an edited trigger keeps its
//! ScaledObject's route when the target of the old metadata is evicted, and a reload reaches the
//! route settings that come from `defaults:`.

use std::collections::HashMap;
use std::time::Duration;

use spinscale::config::Config;
use spinscale::registry::Registry;

const SCALED_OBJECT: &str = "shop/checkout";

fn metadata(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m: HashMap<String, String> =
        [("hosts", "checkout.example.com"), ("backend", "http://checkout.shop.svc:80")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    m.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    m
}

fn config(yaml: &str) -> Config {
    Config::parse(yaml).expect("a valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_trigger_keeps_the_route_when_the_old_target_is_evicted() {
    let registry = Registry::new(config("targets:\n  idleTimeout: 1s\n")).expect("registry");
    let activator = registry.enable_activator();
    registry.target("shop", "checkout", &metadata(&[("holdTimeout", "5s")])).expect("the first trigger registers");
    // KEDA now calls with the edited trigger only; the old target stops being asked about.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    registry.target("shop", "checkout", &metadata(&[("holdTimeout", "9s")])).expect("the edited trigger registers");
    assert_eq!(registry.evict_idle(), 1, "the old metadata's target is evicted, the new one stays");

    let route = activator.route(SCALED_OBJECT).expect("the edited trigger still owns a route");
    assert_eq!(route.hosts, vec!["checkout.example.com".to_string()]);
    assert_eq!(route.hold_timeout, Duration::from_secs(9), "the live target's settings");

    // Once no target carries it, the route goes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(registry.evict_idle(), 1);
    assert!(activator.route(SCALED_OBJECT).is_none(), "no live target routes it any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reaches_route_settings_from_defaults_and_profiles() {
    let registry = Registry::new(config("defaults:\n  holdTimeout: 20s\n")).expect("registry");
    let activator = registry.enable_activator();
    registry.target("shop", "checkout", &metadata(&[])).expect("registers");
    assert_eq!(activator.route(SCALED_OBJECT).expect("routed").hold_timeout, Duration::from_secs(20));

    registry.reload(config("defaults:\n  holdTimeout: 7s\n  maxHeld: \"12\"\n")).expect("the reload applies");
    let route = activator.route(SCALED_OBJECT).expect("still routed");
    assert_eq!((route.hold_timeout, route.max_held), (Duration::from_secs(7), 12), "the new defaults reach the route");

    let profile = "profiles:\n  patient:\n    holdTimeout: 45s\n";
    assert!(registry.target("shop", "checkout", &metadata(&[("profile", "patient")])).is_err(), "no such profile yet");
    registry.reload(config(profile)).expect("the reload applies");
    registry.target("shop", "checkout", &metadata(&[("profile", "patient")])).expect("registers with the profile");
    assert_eq!(activator.route(SCALED_OBJECT).expect("routed").hold_timeout, Duration::from_secs(45));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activators_limits_come_from_the_config_and_follow_reloads() {
    let registry = Registry::new(config(
        "limits:\n  maxHeldRequests: 7\n  maxHeldBodyBytes: 1Mi\nactivator:\n  headerReadTimeout: 3s\n  maxHeaderBytes: 8Ki\n",
    ))
    .expect("registry");
    let limits = registry.enable_activator().limits();
    assert_eq!(
        (limits.max_held_requests, limits.max_held_body_bytes, limits.header_read_timeout, limits.max_header_bytes),
        (7, 1024 * 1024, Duration::from_secs(3), 8 * 1024)
    );
    registry.reload(config("limits:\n  maxHeldRequests: 9\n")).expect("the reload applies");
    let limits = registry.enable_activator().limits();
    assert_eq!(
        (limits.max_held_requests, limits.max_header_bytes),
        (9, 64 * 1024),
        "the new config, defaults included"
    );
}
