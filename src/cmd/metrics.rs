//! `--metrics ADDR`: `/metrics` in the Prometheus text format (OpenMetrics), served from the
//! listener's own process on a small hyper server. The queue gauges (pending, dead letters,
//! listeners alive) are read from Redis at each scrape, the way `fullsend status` reads them;
//! the counters and the histogram are the process's own.

use std::convert::Infallible;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::support::exit::Fail;
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
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (conn, roles) = (conn.clone(), roles.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (conn, roles) = (conn.clone(), roles.clone());
                    async move { Ok::<_, Infallible>(answer(req, conn, &roles).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

async fn answer(
    req: Request<Incoming>,
    conn: Option<crate::bus::store::Conn>,
    roles: &Roles,
) -> Response<Full<Bytes>> {
    let reply = |status: u16, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "only /metrics is served here\n".into());
    }
    if let Some(mut conn) = conn {
        for (role, channel) in roles {
            match crate::cmd::status::role_status(&mut conn, role, channel).await {
                Ok(s) => {
                    let n = |k: &str| s[k].as_i64().unwrap_or(0);
                    metrics::queue(role, n("pending"), n("dead_letters"), n("listeners_alive"));
                }
                Err(err) => tracing::debug!("metrics: reading the {role} queue: {err:#}"),
            }
        }
    }
    reply(200, metrics::CONTENT_TYPE, metrics::render())
}
