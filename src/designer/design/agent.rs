//! The design's agent calls: the spawner settings of each call (skills server, tools dir,
//! web research, sub-agents), one single-shot call, and the six-task RALPH loop, each checked
//! against the run's purse before it starts and charged when it returns.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    Designed, Designer, Mode, RALPH_DESIGN_TASKS, Run, ralph_options, read_output,
    tactical_learnings,
};
use crate::designer::spawn::{self, SpawnOptions};

impl Designer {
    /// The spawner settings of one call of this run: its work dir and label, the skills
    /// server, the tools directory, web research if opted in, sub-agents in RALPH runs.
    pub(crate) fn agent_options(&self, run: &Run, label: &str) -> Result<SpawnOptions, String> {
        let Some(mut opts) = self.spawn.clone() else {
            return Err("no coding agent configured".into());
        };
        opts.work_dir = run.scope.work_dir.clone();
        opts.label = label.to_string();
        if opts.max_turns.is_none() {
            opts.max_turns = self.max_turns;
        }
        let research = self.skills.as_ref().is_some_and(|s| s.research());
        if let Some(wiring) = &self.skills {
            opts.mcp = Some(wiring.server(&run.scope));
            let skills = crate::designer::skills::skills_prompt(research, self.cli_web);
            opts.append_system_prompt = Some(match opts.append_system_prompt.take() {
                Some(own) => format!("{own}\n\n{skills}"),
                None => skills,
            });
        }
        if let Some(dir) = self.tools_dir.as_ref().filter(|d| d.is_dir()) {
            opts.read_dirs.push(dir.clone());
        }
        let mut add = |tool: &str| {
            if !opts.allowed_tools.iter().any(|t| t == tool) {
                opts.allowed_tools.push(tool.to_string());
            }
        };
        if self.cli_web && !research {
            add("WebFetch");
            add("WebSearch");
        }
        // "Claude Code can spawn more Claude Codes": sub-agents share this call's settings.
        if run.mode == Mode::Ralph {
            add("Task");
        }
        Ok(opts)
    }

    pub(super) async fn ask_agent(
        &self,
        prompt: &str,
        run: &Run,
        label: &str,
        designed: &mut Designed,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, String> {
        let mut opts = self.agent_options(run, label)?;
        match run.purse.left().await {
            Ok(cap) => {
                if let Some(cap) = cap {
                    opts.max_budget_usd = Some(opts.max_budget_usd.map_or(cap, |m| m.min(cap)));
                }
            }
            Err(exhausted) => {
                designed.transient = exhausted.daily;
                return Err(exhausted.reason);
            }
        }
        let result = spawn::spawn(&opts, prompt, cancel)
            .await
            .map_err(|e| format!("{e:#}"))?;
        run.purse
            .record(result.total_cost_usd, spawn::billed_model(&opts))
            .await;
        designed.cost_usd += result.total_cost_usd;
        designed.session_ids.extend(result.session_id.clone());
        designed.transient = result.timed_out
            || result.stalled
            || result
                .api_error_status
                .is_some_and(|s| matches!(s, 408 | 409 | 429) || s >= 500);
        // A spec submitted through the skills was validated already; a run that ended on a
        // limit or a timeout after submitting one still produced it.
        if let Some(submitted) = crate::designer::skills::submitted(&opts.work_dir) {
            designed.transient = false;
            designed.learnings = tactical_learnings(&result.result);
            return Ok(submitted);
        }
        if result.timed_out {
            return Err(format!(
                "Timeout - the coding agent took longer than {}s",
                opts.timeout.as_secs()
            ));
        }
        if !result.ok {
            return Err(result
                .error
                .unwrap_or_else(|| "the coding agent failed".into()));
        }
        Ok(with_output_files(result.result, &opts.work_dir))
    }

    pub(super) async fn run_ralph(
        &self,
        vars: &BTreeMap<&str, String>,
        run: &Run,
        designed: &mut Designed,
        cancel: tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, String> {
        let work_dir = &run.scope.work_dir;
        let initial = self
            .prompts
            .render("design_ralph_context.txt", vars)
            .map_err(|e| format!("{e:#}"))?;
        let titles: Vec<String> = RALPH_DESIGN_TASKS
            .iter()
            .map(|t| (*t).to_string())
            .collect();
        crate::designer::ralph::setup(work_dir, &titles, &initial).map_err(|e| format!("{e:#}"))?;
        let spawn = self.agent_options(run, "ralph")?;
        let mut opts = ralph_options(
            &self.prompts,
            spawn,
            self.max_iterations,
            self.ralph_deadline,
            None,
            None,
            String::new(),
        )
        .map_err(|e| format!("{e:#}"))?;
        opts.purse = Some(run.purse.clone());
        opts.verdict_schema = Some(crate::designer::ralph::verdict_schema());
        let progress = self.progress.clone();
        let summary = match &progress {
            Some(p) => crate::designer::ralph::run(opts, p.0.as_ref(), cancel).await,
            None => {
                crate::designer::ralph::run(opts, &crate::designer::ralph::NoProgress, cancel).await
            }
        }
        .map_err(|e| format!("{e:#}"))?;
        designed.cost_usd += summary.cost_usd;
        for learning in &summary.learnings {
            if !designed.learnings.contains(learning) {
                designed.learnings.push(learning.clone());
            }
        }
        // The submitted spec counts even when the loop then ran out of time or money.
        if let Some(submitted) = crate::designer::skills::submitted(work_dir) {
            return Ok(submitted);
        }
        if summary.status != crate::designer::ralph::RalphStatus::Complete {
            designed.transient = summary
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("daily spend limit"));
            return Err(format!(
                "RALPH design ended {:?}: {}",
                summary.status,
                summary.reason.unwrap_or_default()
            ));
        }
        let mut text = with_output_files(String::new(), work_dir);
        // A spec the verdict named under another name, inside the work dir.
        if text.trim().is_empty()
            && let Some(path) = summary.spec_path.as_deref().filter(|p| is_inside(p))
            && let Ok(file) = read_output(&work_dir.join(path))
        {
            text.push_str(&format!("\n\n```yaml\n{file}\n```\n"));
        }
        if text.trim().is_empty() {
            return Err("the RALPH loop did not produce experiment_spec.yaml".into());
        }
        Ok(text)
    }
}

/// A relative path that stays inside the directory it is joined to.
fn is_inside(path: &str) -> bool {
    let p = Path::new(path);
    p.is_relative()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The answer with the spec files the agent wrote in its work dir appended as YAML blocks.
pub(super) fn with_output_files(mut text: String, work_dir: &Path) -> String {
    for name in ["experiment_spec.yaml", "tool_request.yaml"] {
        if let Ok(file) = read_output(&work_dir.join(name)) {
            text.push_str(&format!("\n\n```yaml\n{file}\n```\n"));
        }
    }
    text
}
