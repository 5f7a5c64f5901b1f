//! The policy set in effect, swapped whole on every reload.
//!
//! Readers take the current set with one atomic load and keep it for their
//! whole evaluation, so a reload never changes the rules under an evaluation
//! in flight. A reload compiles everything first, reusing unchanged files,
//! and only then swaps.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::{Build, PolicySet, SourceFile};

/// The current policy set of a running controller.
pub struct LivePolicies {
    current: ArcSwap<PolicySet>,
    loaded: watch::Sender<bool>,
}

impl Default for LivePolicies {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(PolicySet::empty()),
            loaded: watch::Sender::new(false),
        }
    }
}

impl LivePolicies {
    /// The set in effect now.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Builds a new set from `files` on top of the current one and swaps it
    /// in; a file that fails keeps its last good version.
    pub fn apply(&self, files: Vec<SourceFile>) -> Build {
        let previous = self.current();
        let build = PolicySet::build(files, Some(&previous));
        self.current.store(Arc::new(build.set.clone()));
        self.loaded.send_replace(true);
        build
    }

    /// Whether a first set has been loaded from the source.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Waits until a first set has been loaded from the source.
    pub async fn wait_loaded(&self) {
        let mut receiver = self.loaded.subscribe();
        let _ = receiver.wait_for(|loaded| *loaded).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALLOW: &str = "fn admit(request, config) { allow() }";

    #[test]
    fn broken_edit_keeps_the_last_good_version() {
        let live = LivePolicies::default();
        live.apply(vec![SourceFile::new("a.rhai", ALLOW)]);
        let good_hash = live.current().hash().to_owned();

        let build = live.apply(vec![SourceFile::new(
            "a.rhai",
            "fn admit(request, config) {",
        )]);
        assert_eq!(build.kept, vec!["a.rhai".to_owned()]);
        assert_eq!(build.errors.len(), 1);
        assert_eq!(live.current().hash(), good_hash);
    }

    #[test]
    fn removing_a_file_removes_its_rule() {
        let live = LivePolicies::default();
        live.apply(vec![
            SourceFile::new("a.rhai", ALLOW),
            SourceFile::new("b.rhai", ALLOW),
        ]);
        live.apply(vec![SourceFile::new("a.rhai", ALLOW)]);
        assert_eq!(live.current().files(), vec!["a.rhai"]);
    }

    #[test]
    fn in_flight_readers_keep_their_set() {
        let live = LivePolicies::default();
        live.apply(vec![SourceFile::new("a.rhai", ALLOW)]);
        let held = live.current();
        live.apply(vec![SourceFile::new("b.rhai", ALLOW)]);
        assert_eq!(held.files(), vec!["a.rhai"]);
        assert_eq!(live.current().files(), vec!["b.rhai"]);
    }
}
