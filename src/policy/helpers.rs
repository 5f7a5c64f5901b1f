//! Functions policies call, written once in Rust.
//!
//! Patterns (regular expressions and globs) are compiled on first use and
//! cached per thread, so a match needs no lock and no copy of the compiled
//! pattern (copying a regex also copies its matching-cache pool, which costs
//! more than most matches). Regular expressions have a compiled-size limit
//! so a pattern cannot exhaust memory. Every helper that can fail raises a script error,
//! which the policy set turns into a denial.

use std::cell::RefCell;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use oci_spec::distribution::Reference;
use regex::{Regex, RegexBuilder};
use rhai::{Engine, EvalAltResult, Map};

/// Compiled patterns kept at most per kind; a full cache is cleared.
const CACHE_LIMIT: usize = 512;

/// Largest compiled program a regular expression may produce.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

thread_local! {
    static REGEXES: RefCell<HashMap<String, Regex>> = RefCell::default();
    static GLOBS: RefCell<HashMap<String, GlobMatcher>> = RefCell::default();
}

/// Adds the helpers to the engine.
pub fn register(engine: &mut Engine) {
    engine.register_fn("matches", matches);
    engine.register_fn("glob_match", glob_match);
    engine.register_fn("is_digest", is_digest);
    engine.register_fn("is_image", |reference: &str| {
        Reference::from_str(reference).is_ok()
    });
    engine.register_fn("image", image);
    engine.register_fn("duration_seconds", |text: &str| -> ScriptResult<i64> {
        Ok(parse_duration(text)?.as_secs() as i64)
    });
}

/// A helper's own failure (bad input to it), reported as a runtime error:
/// only `throw` in a script counts as thrown by the script.
fn helper_error(message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorSystem(String::new(), message.into()).into()
}

/// `matches(text, pattern)`: whether the regular expression finds a match.
pub fn matches(text: &str, pattern: &str) -> ScriptResult<bool> {
    let build = |p: &str| RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build();
    REGEXES
        .with(|cache| with_cached(cache, pattern, build, |regex| regex.is_match(text)))
        .map_err(|err| helper_error(format!("invalid pattern {pattern:?}: {err}")))
}

/// `glob_match(text, pattern)`: shell-style glob (`*`, `?`, `[a-z]`, `{a,b}`)
/// over the whole text.
pub fn glob_match(text: &str, pattern: &str) -> ScriptResult<bool> {
    let build = |p: &str| Glob::new(p).map(|g| g.compile_matcher());
    GLOBS
        .with(|cache| with_cached(cache, pattern, build, |glob| glob.is_match(text)))
        .map_err(|err| helper_error(format!("invalid glob {pattern:?}: {err}")))
}

/// `is_digest(text)`: `sha256:` and 64, or `sha512:` and 128, lowercase hex.
pub fn is_digest(text: &str) -> bool {
    let hex_of = |len: usize, rest: &str| {
        rest.len() == len
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    match text.split_once(':') {
        Some(("sha256", rest)) => hex_of(64, rest),
        Some(("sha512", rest)) => hex_of(128, rest),
        _ => false,
    }
}

/// `image(reference)`: `#{registry, repository, tag, digest}` of an image
/// reference, with Docker Hub's defaults filled in; an error if invalid.
fn image(reference: &str) -> ScriptResult<Map> {
    let parsed = Reference::from_str(reference)
        .map_err(|err| helper_error(format!("invalid image reference {reference:?}: {err}")))?;
    let mut map = Map::new();
    map.insert("registry".into(), parsed.registry().into());
    map.insert("repository".into(), parsed.repository().into());
    map.insert("tag".into(), parsed.tag().unwrap_or_default().into());
    map.insert("digest".into(), parsed.digest().unwrap_or_default().into());
    Ok(map)
}

/// Parses durations such as `90s`, `1h30m`, `1.5h` or `2 days`.
pub fn parse_duration(text: &str) -> ScriptResult<Duration> {
    crate::duration::parse(text)
        .map_err(|err| helper_error(format!("invalid duration {text:?}: {err}")))
}

/// Runs `use_it` on the compiled `key`, compiling and caching it first if
/// needed; a full cache is cleared.
fn with_cached<V, E, T>(
    cache: &RefCell<HashMap<String, V>>,
    key: &str,
    build: impl FnOnce(&str) -> Result<V, E>,
    use_it: impl FnOnce(&V) -> T,
) -> Result<T, E> {
    if let Some(value) = cache.borrow().get(key) {
        return Ok(use_it(value));
    }
    let value = build(key)?;
    let result = use_it(&value);
    let mut cache = cache.borrow_mut();
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key.to_owned(), value);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_match_and_invalid_pattern() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert!(matches(&digest, "^sha256:[0-9a-f]{64}$").unwrap());
        assert!(!matches("sha256:xyz", "^sha256:[0-9a-f]{64}$").unwrap());
        assert!(matches("x", "(").is_err());
    }

    #[test]
    fn oversized_regex_is_refused() {
        assert!(matches("x", "(a{1000}){1000}").is_err());
    }

    #[test]
    fn glob_matches_whole_text() {
        assert!(glob_match("release-push", "release-*").unwrap());
        assert!(!glob_match("prerelease-push", "release-*").unwrap());
        assert!(glob_match("b", "{a,b}").unwrap());
    }

    #[test]
    fn digests_need_full_lowercase_hex() {
        assert!(is_digest(&format!("sha256:{}", "0f".repeat(32))));
        assert!(!is_digest(&format!("sha256:{}", "0F".repeat(32))));
        assert!(!is_digest("sha256:abc"));
        assert!(!is_digest("md5:abc"));
    }

    #[test]
    fn image_reference_parts() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let parts = image(&format!("quay.io/org/app:1.0@{digest}")).unwrap();
        assert_eq!(parts["registry"].clone().into_string().unwrap(), "quay.io");
        assert_eq!(
            parts["repository"].clone().into_string().unwrap(),
            "org/app"
        );
        assert_eq!(parts["tag"].clone().into_string().unwrap(), "1.0");
        assert_eq!(parts["digest"].clone().into_string().unwrap(), digest);
        assert!(image("not a reference").is_err());
    }

    #[test]
    fn durations_in_go_and_friendly_forms() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("2 days").unwrap(),
            Duration::from_secs(172_800)
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5m").is_err());
    }
}
