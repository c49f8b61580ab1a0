//! Users' own functions on rask: a word count.
//!
//! A family of functions is a set of [`Func`] constants (the contract between the program that
//! submits tasks and the worker that runs them: names and serde types) and a [`Family`] that
//! binds them to Rust code. This crate is both sides:
//!
//! - [`family`] is what the worker binary (`custom-worker`) registers beside rask's own;
//! - [`count_words`] is what a client (`wordcount`) runs: one `tokenize` task per chunk of text,
//!   then a tree of `merge` tasks that reads the counts by [`Input`].

use std::collections::BTreeMap;

use rask::client::delayed::{Delayed, delayed, delayed_with};
use rask::client::{Client, ClientError};
use rask::{Family, Func, Input, KernelError};
use serde::{Deserialize, Serialize};

/// Word counts: a result type of the user's own, sent and stored as any serde value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub words: BTreeMap<String, u64>,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.words.values().sum()
    }

    /// The `n` most frequent words, most frequent first (ties alphabetical).
    pub fn top(&self, n: usize) -> Vec<(&str, u64)> {
        let mut v: Vec<(&str, u64)> = self.words.iter().map(|(w, c)| (w.as_str(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

/// The arguments of `tokenize`: a chunk of text and the shortest word to count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tokenize {
    pub text: String,
    pub min_len: usize,
}

/// Counts the words of a chunk of text (lower-cased, split on anything not alphanumeric).
pub const TOKENIZE: Func<Tokenize, Counts> = Func::new("words.tokenize");
/// Adds up counts: its arguments are the positions of the counts among the task's inputs.
pub const MERGE: Func<Vec<Input<Counts>>, Counts> = Func::new("words.merge");

/// The `words` family, as a worker registers it.
pub fn family() -> Family {
    Family::new("words", env!("CARGO_PKG_VERSION"))
        .function(TOKENIZE, |t: Tokenize, _| tokenize(&t.text, t.min_len))
        .function(MERGE, |parts: Vec<Input<Counts>>, inputs| {
            let mut out = Counts::default();
            for p in parts {
                for (w, c) in inputs.get(p)?.words {
                    *out.words.entry(w).or_default() += c;
                }
            }
            Ok(out)
        })
}

/// Word counts of `text`, as the `tokenize` task computes them.
pub fn tokenize(text: &str, min_len: usize) -> Result<Counts, KernelError> {
    if min_len == 0 {
        return Err(KernelError::failed("tokenize: min_len must be at least 1"));
    }
    let mut out = Counts::default();
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= min_len)
    {
        *out.words.entry(w.to_lowercase()).or_default() += 1;
    }
    Ok(out)
}

/// The graph counting the words of `chunks`: a `tokenize` per chunk, merged `fan_in` at a time.
pub fn count_graph(chunks: Vec<String>, min_len: usize, fan_in: usize) -> Delayed<Counts> {
    let mut level: Vec<Delayed<Counts>> = chunks
        .into_iter()
        .map(|text| delayed(TOKENIZE, Tokenize { text, min_len }))
        .collect();
    let fan_in = fan_in.max(2);
    while level.len() > 1 {
        level = level
            .chunks(fan_in)
            .map(|group| delayed_with(MERGE, |d| group.iter().map(|g| d.input(g)).collect()))
            .collect();
    }
    level
        .pop()
        .unwrap_or_else(|| delayed_with(MERGE, |_| Vec::new()))
}

/// Counts the words of `chunks` on the cluster.
pub async fn count_words(
    client: &Client,
    chunks: Vec<String>,
    min_len: usize,
) -> Result<Counts, ClientError> {
    client
        .compute(&count_graph(chunks, min_len, 8))
        .result()
        .await
}

/// A seeded text of `lines` lines over a small vocabulary (for demos and tests).
pub fn sample_text(lines: usize, seed: u64) -> Vec<String> {
    const WORDS: &[&str] = &[
        "dask",
        "rask",
        "graph",
        "task",
        "worker",
        "scheduler",
        "future",
        "array",
        "frame",
        "chunk",
        "spill",
        "memory",
        "cluster",
        "rust",
        "python",
        "delayed",
    ];
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..lines)
        .map(|_| {
            let n = 4 + (next() % 8) as usize;
            (0..n)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect::<Vec<_>>()
                .join(" ")
                + "."
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use rask::Registry;

    use super::*;

    #[test]
    fn tokenize_counts_words_case_blind() {
        let c = tokenize("Rask, rask! a graph-task.", 2).unwrap();
        assert_eq!(c.words.get("rask"), Some(&2));
        assert_eq!(c.words.get("graph"), Some(&1));
        assert_eq!(c.words.get("a"), None);
        assert!(tokenize("x", 0).is_err());
    }

    #[test]
    fn the_graph_run_here_matches_a_direct_count() {
        let mut registry = Registry::new();
        registry.register(family()).unwrap();
        let text = sample_text(500, 7);
        let root = count_graph(text.chunks(37).map(|c| c.join("\n")).collect(), 1, 4);
        let done = registry.compute_local(&root.graph(), &[]).unwrap();
        let got: Counts = done[root.key()].decode().unwrap();
        assert_eq!(got, tokenize(&text.join("\n"), 1).unwrap());
        assert!(got.total() > 2000);
    }
}
