//! `--metrics ADDR`: `/metrics` in the Prometheus text format (OpenMetrics), served from the
//! listener's own process. The queue gauges (pending, dead letters, listeners alive) are read
//! from Redis at each scrape, the way `fullsend status` reads them; the counters and the
//! histogram are the process's own.

use std::net::SocketAddr;

use crate::support::exit::Fail;
use crate::support::http_serve::{reply, serve as serve_http};
use crate::support::metrics;

/// The roles whose queues a scrape reports: (role, channel).
pub type Roles = Vec<(String, String)>;

/// Binds `addr` and serves `/metrics` until the process ends. Errors only when binding fails.
pub async fn serve(
    addr: SocketAddr,
    redis_url: String,
    roles: Roles,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Fail::usage(format!("--metrics {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    tracing::info!("metrics on http://{bound}/metrics");
    let conn = crate::cmd::optional_redis_url(&redis_url).await;
    serve_http(listener, move |req, _peer| {
        let (conn, roles) = (conn.clone(), roles.clone());
        async move {
            if req.uri().path() != "/metrics" {
                return reply(404, "text/plain", "only /metrics is served here\n");
            }
            let body = crate::bus::queues::scrape(conn, &roles).await;
            reply(200, metrics::CONTENT_TYPE, body)
        }
    });
    Ok(bound)
}
