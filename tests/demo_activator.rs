//! `spinscale demo --activator` end to end: a burst at zero is held, the app is woken by the
//! pushed `true`, and every request is answered exactly once (the demo fails otherwise).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_demo_wakes_the_app_and_loses_no_request() {
    spinscale::demo::http::run(std::time::Duration::from_secs(4)).await.expect("no request lost");
}
