//! The rendered context blocks of the last prompt, kept while the context they came from is
//! unchanged: a listener renders an unchanged context once, not once per message.

use super::loader::Context;
use super::prompt::{ContextBlocks, Prompts, context_blocks};

/// The last context blocks and what they were rendered from (the shared parts, compared by
/// identity: a changed file or Redis part is a new allocation).
#[derive(Debug, Default)]
pub struct PromptCache {
    last: std::sync::Mutex<Option<Cached>>,
}

/// What the cached blocks were rendered from (parts and budget), and the blocks.
type Cached = (Vec<Part>, usize, std::sync::Arc<ContextBlocks>);

/// One shared part of a context, kept alive by the cache so its identity cannot be reused.
#[derive(Debug, Clone)]
enum Part {
    Text(std::sync::Arc<String>),
    List(std::sync::Arc<dyn std::any::Any + Send + Sync>),
}

impl Part {
    fn same(&self, other: &Part) -> bool {
        match (self, other) {
            // A missing file is a fresh empty text each time.
            (Part::Text(a), Part::Text(b)) => {
                std::sync::Arc::ptr_eq(a, b) || (a.is_empty() && b.is_empty())
            }
            (Part::List(a), Part::List(b)) => {
                std::ptr::addr_eq(std::sync::Arc::as_ptr(a), std::sync::Arc::as_ptr(b))
            }
            _ => false,
        }
    }
}

fn parts_of(ctx: &Context) -> Vec<Part> {
    fn list<T: Send + Sync + 'static>(v: &std::sync::Arc<Vec<T>>) -> Part {
        Part::List(v.clone() as std::sync::Arc<dyn std::any::Any + Send + Sync>)
    }
    vec![
        Part::Text(ctx.product.clone()),
        Part::Text(ctx.learnings.clone()),
        Part::Text(ctx.worklist.clone()),
        list(&ctx.experiments),
        list(&ctx.tools),
        list(&ctx.tactical_learnings),
        list(&ctx.metrics),
    ]
}

/// A copy starts empty: it is a cache, not state.
impl Clone for PromptCache {
    fn clone(&self) -> Self {
        PromptCache::default()
    }
}

impl PromptCache {
    /// The context blocks of `ctx`, rendered again only when a part of it changed.
    pub fn blocks(
        &self,
        prompts: &Prompts,
        ctx: &Context,
        budget_tokens: usize,
    ) -> anyhow::Result<std::sync::Arc<ContextBlocks>> {
        let parts = parts_of(ctx);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, budget, blocks)) = last.as_ref()
            && *budget == budget_tokens
            && cached.len() == parts.len()
            && cached.iter().zip(&parts).all(|(a, b)| a.same(b))
        {
            return Ok(blocks.clone());
        }
        let blocks = std::sync::Arc::new(context_blocks(prompts, ctx, budget_tokens)?);
        *last = Some((parts, budget_tokens, blocks.clone()));
        Ok(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_context_is_rendered_once() {
        let prompts = Prompts::default();
        let cache = PromptCache::default();
        let ctx = Context::default();
        let first = cache.blocks(&prompts, &ctx, 24_000).expect("blocks");
        // A fresh context with the same (empty, missing) files and the same lists.
        let same = Context {
            experiments: ctx.experiments.clone(),
            tools: ctx.tools.clone(),
            tactical_learnings: ctx.tactical_learnings.clone(),
            metrics: ctx.metrics.clone(),
            ..Context::default()
        };
        let again = cache.blocks(&prompts, &same, 24_000).expect("blocks");
        assert!(std::sync::Arc::ptr_eq(&first, &again), "reused");
        let changed = Context {
            worklist: std::sync::Arc::new("# Worklist\n- one\n".into()),
            ..same.clone()
        };
        let third = cache.blocks(&prompts, &changed, 24_000).expect("blocks");
        assert!(
            !std::sync::Arc::ptr_eq(&again, &third),
            "a change renders again"
        );
        let other_budget = cache.blocks(&prompts, &changed, 8_000).expect("blocks");
        assert!(
            !std::sync::Arc::ptr_eq(&third, &other_budget),
            "so does another budget"
        );
    }
}
