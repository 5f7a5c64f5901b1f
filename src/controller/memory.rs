//! What this process remembers of its own recent writes, so that a watch
//! cache lagging behind them is not mistaken for the cluster: the resource
//! version a request got from our last write, the runs we created and the
//! runs we deleted.
//!
//! Each memory is bounded: when full it is cleared, which costs at most one
//! retried write or one read per forgotten entry, never a wrong decision.

use std::collections::HashMap;
use std::sync::Mutex;

/// Most entries kept per memory.
const LIMIT: usize = 50_000;

/// A bounded map from a name or uid to what was noted about it.
#[derive(Debug)]
pub struct Memory<V> {
    entries: Mutex<HashMap<String, V>>,
}

impl<V> Default for Memory<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<V: Copy> Memory<V> {
    pub fn note(&self, key: &str, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= LIMIT {
            entries.clear();
        }
        entries.insert(key.to_owned(), value);
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).copied()
    }

    pub fn forget(&self, key: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_forgets_and_clears_when_full() {
        let memory = Memory::default();
        memory.note("a", 1u64);
        assert_eq!(memory.get("a"), Some(1));
        memory.forget("a");
        assert_eq!(memory.get("a"), None);
        for i in 0..=LIMIT {
            memory.note(&i.to_string(), i as u64);
        }
        assert_eq!(memory.get("0"), None);
        assert_eq!(memory.get(&LIMIT.to_string()), Some(LIMIT as u64));
    }
}
