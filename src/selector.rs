//! Checking a label selector's syntax before anything talks to a cluster.
//!
//! The API server is the judge of a selector, but a typo in a flag should
//! stop the controller at start with a message, not make every watch fail
//! and retry for ever. The grammar is Kubernetes': requirements separated
//! by commas, each `key`, `!key`, `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)` or `key notin (a,b)`.

use std::sync::LazyLock;

use regex::Regex;

/// A label key: an optional DNS-subdomain prefix and `/`, then a name.
static KEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$",
    )
    .expect("valid pattern")
});

/// A label value: empty, or up to 63 characters of `[-A-Za-z0-9_.]`
/// starting and ending with a letter or digit.
static VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$").expect("valid pattern")
});

/// `Ok` with the selector as given, or what is wrong with it.
pub fn check(selector: &str) -> Result<String, String> {
    for requirement in split(selector)? {
        check_requirement(requirement.trim())?;
    }
    Ok(selector.to_owned())
}

/// Splits on the commas that are not inside a value list.
fn split(selector: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced parentheses".to_owned());
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".to_owned());
    }
    parts.push(&selector[start..]);
    Ok(parts)
}

fn check_requirement(requirement: &str) -> Result<(), String> {
    if requirement.is_empty() {
        return Err("an empty requirement (two commas in a row, or a trailing comma)".to_owned());
    }
    if let Some(key) = requirement.strip_prefix('!') {
        return check_key(key.trim());
    }
    for op in ["!=", "==", "="] {
        if let Some((key, value)) = requirement.split_once(op) {
            check_key(key.trim())?;
            return check_value(value.trim());
        }
    }
    for op in [" notin ", " in "] {
        if let Some((key, values)) = requirement.split_once(op) {
            check_key(key.trim())?;
            let list = values
                .trim()
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(|| format!("'{requirement}': the values must be in parentheses"))?;
            return list.split(',').try_for_each(|v| check_value(v.trim()));
        }
    }
    check_key(requirement)
}

fn check_key(key: &str) -> Result<(), String> {
    match KEY.is_match(key) && key.len() <= 317 {
        true => Ok(()),
        false => Err(format!("'{key}' is not a valid label key")),
    }
}

fn check_value(value: &str) -> Result<(), String> {
    match VALUE.is_match(value) {
        true => Ok(()),
        false => Err(format!("'{value}' is not a valid label value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_form_of_requirement() {
        for selector in [
            "app",
            "!app",
            "app=web",
            "app==web,tier!=db",
            "example.com/team in (a, b),env notin (prod)",
            "internal-services.test/case=x-1",
            "app=",
        ] {
            assert!(check(selector).is_ok(), "{selector}: {:?}", check(selector));
        }
    }

    #[test]
    fn refuses_broken_selectors_with_a_reason() {
        for (selector, why) in [
            ("a in (b", "parentheses"),
            ("a,,b", "empty requirement"),
            ("a in b", "parentheses"),
            ("-a=b", "label key"),
            ("a=b c", "label value"),
            ("a=b,", "empty requirement"),
        ] {
            let err = check(selector).unwrap_err();
            assert!(err.contains(why), "{selector}: {err}");
        }
    }
}
