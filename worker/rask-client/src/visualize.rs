//! Task graphs as Graphviz DOT (Dask's `visualize()`): one box per task labelled with its
//! function, edges from inputs to their users; an SVG beside it when Graphviz's `dot` is installed.
//!
//! ```
//! use rask_client::delayed::{delayed, delayed_with};
//! use rask_client::visualize::to_dot;
//! use rask_core::{Func, Operand, Value};
//! const INC: Func<Operand<Value>, Value> = Func::new("seed.inc");
//! let total = delayed_with(INC, |d| d.input(&delayed(INC, Operand::Value(Value::Int(1)))).into());
//! let dot = to_dot(&total.graph());
//! assert!(dot.starts_with("digraph"));
//! assert_eq!(dot.matches(" -> ").count(), 1);
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use rustc_hash::FxHashMap;

use rask_core::TaskSpec;

use super::delayed::{Delayed, func_prefix};

/// Escapes a string for a double-quoted DOT identifier.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A task's label: its function without the family (`inc`, `eval`).
fn label(t: &TaskSpec) -> String {
    func_prefix(t.func.as_str()).to_owned()
}

/// The graph as DOT text: tasks are boxes labelled by function,
/// edges run from each input to the tasks reading it.
pub fn to_dot(tasks: &[TaskSpec]) -> String {
    to_dot_labelled(tasks, label)
}

/// [`to_dot`] with the tasks' labels chosen by `label` (a client whose tasks all share one
/// function, such as Python calls, labels them by key prefix instead).
pub fn to_dot_labelled(tasks: &[TaskSpec], label: impl Fn(&TaskSpec) -> String) -> String {
    let ids: FxHashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.key.as_str(), i))
        .collect();
    let mut out = String::from("digraph rask {\n  rankdir=BT;\n  node [shape=box, fontsize=10];\n");
    for (i, t) in tasks.iter().enumerate() {
        out.push_str(&format!(
            "  t{i} [label={}, tooltip={}];\n",
            quote(&label(t)),
            quote(t.key.as_str())
        ));
    }
    for (i, t) in tasks.iter().enumerate() {
        for d in t.dependencies() {
            match ids.get(d.as_str()) {
                Some(j) => out.push_str(&format!("  t{j} -> t{i};\n")),
                // An input computed earlier (a future's key): drawn as a plain node.
                None => out.push_str(&format!(
                    "  {} [shape=ellipse];\n  {} -> t{i};\n",
                    quote(d.as_str()),
                    quote(d.as_str())
                )),
            }
        }
    }
    out.push_str("}\n");
    out
}

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub dot: PathBuf,
    /// The SVG, when Graphviz's `dot` is installed.
    pub svg: Option<PathBuf>,
}

/// Writes the graph's DOT to `path` (with the extension `.dot`) and, when `dot` is on the PATH,
/// renders `path` with the extension `.svg` beside it.
pub fn write(tasks: &[TaskSpec], path: &Path) -> std::io::Result<Written> {
    write_labelled(tasks, path, label)
}

/// [`write`] with the labels of [`to_dot_labelled`].
pub fn write_labelled(
    tasks: &[TaskSpec],
    path: &Path,
    label: impl Fn(&TaskSpec) -> String,
) -> std::io::Result<Written> {
    let dot_path = path.with_extension("dot");
    std::fs::write(&dot_path, to_dot_labelled(tasks, label))?;
    let svg_path = path.with_extension("svg");
    let rendered = Command::new("dot")
        .arg("-Tsvg")
        .arg(&dot_path)
        .arg("-o")
        .arg(&svg_path)
        .output();
    let svg = match rendered {
        Ok(o) if o.status.success() => Some(svg_path),
        Ok(o) => {
            tracing::warn!(stderr = %String::from_utf8_lossy(&o.stderr), "dot could not render the graph");
            None
        }
        Err(_) => None, // Graphviz is not installed: the DOT file is the result.
    };
    Ok(Written { dot: dot_path, svg })
}

impl<R> Delayed<R> {
    /// Writes this value's task graph (see [`write`]), like Dask's `visualize()`.
    pub fn visualize(&self, path: impl AsRef<Path>) -> std::io::Result<Written> {
        write(&self.graph(), path.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rask_core::{Func, Operand, Value};

    use super::*;
    use crate::delayed::{Deps, delayed, delayed_with};

    const INC: Func<Operand<Value>, Value> = Func::new("t.inc");
    const ADD: Func<(Operand<Value>, Operand<Value>), Value> = Func::new("t.add");
    const SUM: Func<Vec<Operand<Value>>, Value> = Func::new("t.sum");

    #[test]
    fn seed_shaped_graph_has_every_task_and_edge() {
        let parts: Vec<Delayed<Value>> = (0..6)
            .map(|x| {
                let a = delayed(INC, Operand::Value(Value::Int(x)));
                let b = delayed(INC, Operand::Value(Value::Int(x)));
                delayed_with(ADD, |d| (d.input(&a).into(), d.input(&b).into()))
            })
            .collect();
        let total = delayed_with(SUM, |d| parts.iter().map(|p| d.input(p).into()).collect());
        let dot = to_dot(&total.graph());
        assert_eq!(dot.matches("[label=").count(), 19);
        assert_eq!(dot.matches(" -> ").count(), 18);
        assert!(dot.contains("label=\"inc\""));
        assert!(dot.contains("label=\"sum\""));
    }

    #[test]
    fn keys_are_escaped_and_files_written() {
        let d: Delayed<Value> = Delayed::from_parts(
            "odd-\"key\\".into(),
            "t.inc".into(),
            Bytes::new(),
            Deps::new(),
        );
        let dot = to_dot(&d.graph());
        assert!(dot.contains("tooltip=\"odd-\\\"key\\\\\""), "{dot}");
        let dir = tempfile::tempdir().unwrap();
        let w = d.visualize(dir.path().join("g.svg")).unwrap();
        assert!(
            std::fs::read_to_string(&w.dot)
                .unwrap()
                .starts_with("digraph")
        );
        if let Some(svg) = w.svg {
            assert!(std::fs::read_to_string(svg).unwrap().contains("<svg"));
        }
    }
}
