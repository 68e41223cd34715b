//! `fullsend web`: the operator's console, served from the binary (see `src/console`). Prints
//! one JSON line with its address when it is up, then serves until SIGINT or SIGTERM.

use std::net::SocketAddr;

use serde_json::json;

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::support::exit::Exit;

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  fullsend web                                   # http://127.0.0.1:8765/, token printed
  FULLSEND_WEB_TOKEN=$(openssl rand -hex 24) fullsend web --listen 0.0.0.0:8765
  curl -s -H 'Accept: application/json' http://127.0.0.1:8765/queues | jq '.roles[].dead_letters'
  curl -s -X POST -H \"Authorization: Bearer $FULLSEND_WEB_TOKEN\" -d '{\"all\":true}' \\
       http://127.0.0.1:8765/api/queues/fullsend/requeue

Output: one line when it is up, then one line per change asked (done or refused):
  {\"v\":1,\"url\":\"http://127.0.0.1:8765/\",\"login_url\":\"http://127.0.0.1:8765/?token=…\"}
  {\"v\":1,\"event\":\"console_change\",\"who\":\"127.0.0.1:50112 (cookie, mozilla/5.0 …)\",
   \"what\":\"/api/queues/fullsend/requeue\",\"status\":200,\"outcome\":{\"requeued\":[…]}}

Pages (each also JSON: Accept: application/json, or /api/<page>): / (live trail),
/experiments, /queues, /spend, /context; /api/events (server-sent events), /metrics.
A non-loopback address needs FULLSEND_WEB_TOKEN; without it a token is made at start
and printed in login_url. Changes (kill, pause, resume, requeue) always need the token.";

/// Arguments of `fullsend web`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, env = "FULLSEND_WEB_LISTEN", default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
}

/// Runs `web`.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    let mut shutdown = crate::support::signal::shutdown_channel();
    // The token comes from the environment only: an argument would show in `ps`.
    let token = std::env::var("FULLSEND_WEB_TOKEN").ok();
    let mut started = crate::console::start(env.config.clone(), args.listen, token).await?;
    let mut line = json!({"v": 1, "url": started.url});
    if started.token_generated {
        line["login_url"] = json!(started.login_url);
        eprintln!(
            "fullsend web: console on {} (open it logged in: {})",
            started.url, started.login_url
        );
    } else {
        eprintln!(
            "fullsend web: console on {} (it asks for FULLSEND_WEB_TOKEN)",
            started.url
        );
    }
    env.emit(&line)?;
    // Then one line per change asked of the console: the log of who changed what.
    loop {
        tokio::select! {
            () = crate::support::signal::wait_cancelled(&mut shutdown) => break,
            Some(change) = started.changes.recv() => {
                if let Err(err) = env.emit(&change) {
                    tracing::warn!("writing the change record: {err:#}; it was: {change}");
                }
            }
        }
    }
    Ok(crate::support::signal::received().unwrap_or(Exit::Success))
}
