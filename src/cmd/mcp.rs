//! `fullsend mcp`: the agent's skills as an MCP server on stdin/stdout (newline-delimited
//! JSON-RPC, through `rmcp`), scoped to one run. The designer starts it for Claude Code through
//! a generated `--mcp-config`; its Redis URL comes from its own environment, which the agent
//! never sees. Logs go to stderr only: a stray byte on stdout would break the session.

use std::path::PathBuf;
use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt as _};
use serde_json::Value;

use crate::cmd::Env;
use crate::cmd::args::GlobalArgs;
use crate::designer::skills::{Research, Scope, Skills, ToolError};
use crate::support::exit::{Exit, Fail};

/// Examples shown in `--help` and the man page.
pub const EXAMPLES: &str = "\
Examples:
  # What the designer writes into the agent's --mcp-config (REDIS_URL in the server's env):
  fullsend --no-config mcp --run run_1 --request req_1 --work-dir /tmp/fullsend-1000/design_x

  # By hand, one JSON-RPC request per line:
  printf '%s\\n' '{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"clientInfo\":{\"name\":\"sh\",\"version\":\"1\"}}}' \\
    | fullsend mcp --run manual --request manual --work-dir \"$PWD\"

Tools: tool_registry, list_experiments, get_experiment, search_learnings, product_context,
strategic_learnings, append_learning, request_tool, submit_spec, and web_fetch when
BROWSERBASE_API_KEY is set.";

/// Arguments of `fullsend mcp`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// The run these skills serve: scopes every idempotency key.
    #[arg(long, value_name = "ID")]
    pub run: String,
    /// The design request the run works on (carried by every write).
    #[arg(long, value_name = "ID")]
    pub request: String,
    /// The experiment the run works on, if any.
    #[arg(long, value_name = "ID")]
    pub experiment: Option<String>,
    /// The run's work dir: submitted specs and tool requests are staged in its `.fullsend/submitted/`.
    #[arg(long, value_name = "DIR")]
    pub work_dir: PathBuf,
    /// product_context.md [default: CONTEXT_PATH/product_context.md].
    #[arg(long, value_name = "FILE")]
    pub product_context: Option<PathBuf>,
    /// learnings.md [default: CONTEXT_PATH/learnings.md].
    #[arg(long, value_name = "FILE")]
    pub learnings: Option<PathBuf>,
    /// Write nothing to Redis (a dry run): `append_learning` is refused.
    #[arg(long)]
    pub read_only: bool,
}

/// The MCP adapter over the skills.
struct Server {
    skills: Arc<Skills>,
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("fullsend", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "FULLSEND's skills: read the tools registry, experiments and learnings; record \
                 learnings, tool requests and the experiment spec for this run.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self
            .skills
            .tools()
            .into_iter()
            .map(|t| {
                let schema = match t.input_schema {
                    Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                Tool::new(t.name, t.description, Arc::new(schema))
            })
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let name = request.name.to_string();
        let answer = self.skills.call(&name, &args).await;
        let result = match answer {
            Ok(value) => {
                tracing::info!("skill {name}: ok");
                CallToolResult::success(vec![ContentBlock::text(value.to_string())])
            }
            Err(ToolError::Unknown(_)) => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {name:?}"),
                    None,
                ));
            }
            // The model reads the text and can fix its call within its turn.
            Err(err) => {
                tracing::info!("skill {name}: {err}");
                CallToolResult::error(vec![ContentBlock::text(err.to_string())])
            }
        };
        Ok(result.into())
    }
}

/// Runs `fullsend mcp` until the client closes stdin.
pub async fn run(args: Args, global: &GlobalArgs) -> anyhow::Result<Exit> {
    let env = Env::load(global, Vec::new())?;
    for (what, id) in [("--run", &args.run), ("--request", &args.request)] {
        if !crate::support::msg::is_safe_id(id) {
            return Err(Fail::usage(format!(
                "{what} {:?} is not a safe id",
                crate::support::msg::preview(id, 40)
            )));
        }
    }
    if let Some(exp) = &args.experiment
        && !crate::support::msg::valid_key_id(exp)
    {
        return Err(Fail::usage("--experiment is not a valid experiment id"));
    }
    let work_dir = std::fs::canonicalize(&args.work_dir)
        .map_err(|e| Fail::usage(format!("--work-dir {}: {e}", args.work_dir.display())))?;
    let context = env.config.context_path();
    let research = match std::env::var("BROWSERBASE_API_KEY") {
        Ok(key) if !key.trim().is_empty() => {
            let url = std::env::var("BROWSERBASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| crate::designer::skills::research::BROWSERBASE_URL.to_string());
            Some(Research::new(key, &url)?)
        }
        _ => None,
    };
    // Without Redis the file skills (product context, strategic learnings, submit_spec) still
    // work; the Redis ones say it is unavailable, so the agent is never left without an answer.
    let conn = crate::cmd::optional_redis(&env.config).await;
    let skills = Skills::new(
        conn,
        Scope {
            run_id: args.run,
            request_id: args.request,
            experiment_id: args.experiment,
            work_dir,
        },
        args.product_context
            .unwrap_or_else(|| context.join("product_context.md")),
        args.learnings
            .unwrap_or_else(|| context.join("learnings.md")),
        research,
    );
    let mut skills = skills;
    skills.read_only = args.read_only;
    let server = Server {
        skills: Arc::new(skills),
    };
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Fail::upstream(format!("the MCP session did not start: {e}")))?;
    let _ = running.waiting().await;
    Ok(Exit::Success)
}
