//! The demo: placeholder replaced below.
pub async fn run(_duration: std::time::Duration) -> anyhow::Result<()> {
    anyhow::bail!("demo not built yet")
}
