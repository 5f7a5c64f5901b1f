//! Functions policies call, written once in Rust.
//!
//! Regular expressions are compiled on first use and cached, with a size
//! limit so a pattern cannot exhaust memory.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::{Regex, RegexBuilder};
use rhai::{Engine, EvalAltResult};

/// Compiled patterns kept at most; the cache is cleared when full.
const CACHE_LIMIT: usize = 512;

/// Largest compiled program a pattern may produce.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

static PATTERNS: LazyLock<Mutex<HashMap<String, Regex>>> = LazyLock::new(Default::default);

/// Adds the helpers to the engine.
pub fn register(engine: &mut Engine) {
    engine.register_fn("matches", matches);
}

/// `matches(text, pattern)`: whether `pattern` finds a match in `text`.
fn matches(text: &str, pattern: &str) -> Result<bool, Box<EvalAltResult>> {
    let regex = compiled(pattern).map_err(|err| format!("invalid pattern {pattern:?}: {err}"))?;
    Ok(regex.is_match(text))
}

fn compiled(pattern: &str) -> Result<Regex, regex::Error> {
    let mut cache = PATTERNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(regex) = cache.get(pattern) {
        return Ok(regex.clone());
    }

    let regex = RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()?;
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), regex.clone());
    Ok(regex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_finds_digest() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches(&digest, "^sha256:[0-9a-f]{64}$").unwrap());
        assert!(!matches("sha256:xyz", "^sha256:[0-9a-f]{64}$").unwrap());
    }

    #[test]
    fn invalid_pattern_is_an_error() {
        assert!(matches("x", "(").is_err());
    }
}
