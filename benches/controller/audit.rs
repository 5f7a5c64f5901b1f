//! Counting the controller's requests from the API servers' audit logs, not
//! from its own counters: every request the servers answered, by user,
//! verb and resource.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where each audit log ended at some moment.
pub struct Mark {
    offsets: Vec<(PathBuf, u64)>,
}

#[derive(Deserialize)]
struct Entry {
    verb: String,
    user: User,
    #[serde(rename = "objectRef")]
    object: Option<Object>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct Object {
    resource: Option<String>,
    subresource: Option<String>,
}

/// Requests of one user between two marks.
#[derive(Debug, Default)]
pub struct Counts {
    /// Creates, updates, patches and deletes, by `resource[/subresource]`.
    pub writes: BTreeMap<String, u64>,
    /// Gets and lists that were not the start of a watch, by resource.
    pub reads: BTreeMap<String, u64>,
}

impl Counts {
    pub fn total_reads(&self) -> u64 {
        self.reads.values().sum()
    }
}

impl Mark {
    /// The current end of every `*-audit.log` in `dir`.
    pub fn now(dir: &Path) -> Self {
        let mut offsets = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read the control plane's directory") {
            let path = entry.expect("directory entry").path();
            if path.to_string_lossy().ends_with("-audit.log") {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                offsets.push((path, len));
            }
        }
        Self { offsets }
    }

    /// What `user` asked for since this mark.
    pub fn count_since(&self, user: &str) -> Counts {
        let mut counts = Counts::default();
        for (path, offset) in &self.offsets {
            let bytes = std::fs::read(path).expect("read audit log");
            let text = String::from_utf8_lossy(&bytes[(*offset as usize).min(bytes.len())..]);
            for line in text.lines() {
                let Ok(entry) = serde_json::from_str::<Entry>(line) else {
                    continue;
                };
                if entry.user.username != user {
                    continue;
                }
                let Some(object) = entry.object else { continue };
                let mut resource = object.resource.unwrap_or_default();
                if let Some(sub) = object.subresource {
                    resource = format!("{resource}/{sub}");
                }
                match entry.verb.as_str() {
                    "create" | "update" | "patch" | "delete" => {
                        *counts.writes.entry(resource).or_default() += 1
                    }
                    "get" | "list" => *counts.reads.entry(resource).or_default() += 1,
                    _ => {}
                }
            }
        }
        counts
    }
}
