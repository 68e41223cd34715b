//! Cost of a call from a price table (USD per million tokens). Prices change:
//! the built-in table is a dated default, and `FULLSEND_PRICES` (a JSON file)
//! replaces it.

use crate::llm::Usage;

/// One model's prices, USD per million tokens.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct Price {
    input: f64,
    output: f64,
    cache_write: f64,
    cache_read: f64,
}

/// List prices of November 2026 (docs/model-apis.md §10), matched by substring.
const DEFAULT_PRICES: &[(&str, Price)] = &[
    (
        "opus-5-5",
        Price {
            input: 4.0,
            output: 20.0,
            cache_write: 5.0,
            cache_read: 0.20,
        },
    ),
    (
        "sonnet-5-5",
        Price {
            input: 2.0,
            output: 10.0,
            cache_write: 2.5,
            cache_read: 0.10,
        },
    ),
    (
        "haiku-5-5",
        Price {
            input: 0.10,
            output: 0.50,
            cache_write: 0.125,
            cache_read: 0.01,
        },
    ),
    (
        "fable-5-1",
        Price {
            input: 10.0,
            output: 50.0,
            cache_write: 12.5,
            cache_read: 0.25,
        },
    ),
    (
        "opus-5",
        Price {
            input: 5.0,
            output: 25.0,
            cache_write: 6.25,
            cache_read: 0.50,
        },
    ),
    (
        "sonnet-5",
        Price {
            input: 2.0,
            output: 10.0,
            cache_write: 2.5,
            cache_read: 0.20,
        },
    ),
    (
        "opus-4",
        Price {
            input: 5.0,
            output: 25.0,
            cache_write: 6.25,
            cache_read: 0.50,
        },
    ),
    (
        "sonnet-4",
        Price {
            input: 3.0,
            output: 15.0,
            cache_write: 3.75,
            cache_read: 0.30,
        },
    ),
    (
        "haiku-4",
        Price {
            input: 1.0,
            output: 5.0,
            cache_write: 1.25,
            cache_read: 0.10,
        },
    ),
];

/// The cost of `usage` on `model`, or None when the model has no price.
pub fn cost(model: &str, usage: &Usage) -> Option<f64> {
    let price = lookup(model)?;
    let per = 1_000_000.0;
    Some(
        (usage.input_tokens as f64 * price.input
            + usage.output_tokens as f64 * price.output
            + usage.cache_creation_input_tokens as f64 * price.cache_write
            + usage.cache_read_input_tokens as f64 * price.cache_read)
            / per,
    )
}

fn lookup(model: &str) -> Option<Price> {
    if let Ok(path) = std::env::var("FULLSEND_PRICES") {
        let table: std::collections::BTreeMap<String, Price> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())?;
        return table
            .iter()
            .find(|(k, _)| model.contains(k.as_str()))
            .map(|(_, p)| *p);
    }
    DEFAULT_PRICES
        .iter()
        .find(|(k, _)| model.contains(k))
        .map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_by_model() {
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 0,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 1_000_000,
        };
        assert_eq!(cost("claude-opus-5-5", &usage), Some(4.2));
        assert_eq!(cost("unknown-model", &usage), None);
    }
}
