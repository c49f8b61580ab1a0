//! Reading a file of Dask resources, as `kubectl apply -f` would take it: one or more YAML
//! documents, each a `kubernetes.dask.org/v1` DaskCluster, DaskWorkerGroup, DaskAutoscaler or
//! DaskJob.

use serde::Deserialize;

use crate::crd::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};

/// One resource of the file.
#[derive(Clone, Debug)]
pub enum Resource {
    Cluster(Box<DaskCluster>),
    WorkerGroup(Box<DaskWorkerGroup>),
    Autoscaler(Box<DaskAutoscaler>),
    Job(Box<DaskJob>),
}

/// Why the file cannot be read; names the document (1-based) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("{file}, document {doc}: {reason}")]
    Document {
        file: String,
        doc: usize,
        reason: String,
    },
}

const GROUP_VERSION: &str = "kubernetes.dask.org/v1";

/// Parses every document of `text` (named `file` in errors). Empty documents are skipped.
pub fn parse(file: &str, text: &str) -> Result<Vec<Resource>, ManifestError> {
    let mut out = Vec::new();
    // Each document is read twice: as a plain value for its kind, then straight into its type,
    // so errors carry the field path and line (a conversion from the value would lose them).
    let mut typed_docs = serde_yaml::Deserializer::from_str(text);
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let typed_de = typed_docs.next();
        let doc = i + 1;
        let err = |reason: String| ManifestError::Document {
            file: file.to_owned(),
            doc,
            reason,
        };
        let value = serde_yaml::Value::deserialize(de).map_err(|e| err(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let api_version = field("apiVersion").ok_or_else(|| err("no apiVersion".into()))?;
        let kind = field("kind").ok_or_else(|| err("no kind".into()))?;
        if api_version != GROUP_VERSION {
            return Err(err(format!(
                "apiVersion {api_version:?} is not {GROUP_VERSION:?} (kind {kind})"
            )));
        }
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|n| n.as_str())
            .ok_or_else(|| err(format!("{kind} has no metadata.name")))?
            .to_owned();
        let typed_de =
            typed_de.ok_or_else(|| err("the document could not be read a second time".into()))?;
        let typed = |e: serde_yaml::Error| err(format!("{kind} {name}: {e}"));
        let r = match kind.as_str() {
            "DaskCluster" => Resource::Cluster(Deserialize::deserialize(typed_de).map_err(typed)?),
            "DaskWorkerGroup" => {
                Resource::WorkerGroup(Deserialize::deserialize(typed_de).map_err(typed)?)
            }
            "DaskAutoscaler" => {
                Resource::Autoscaler(Deserialize::deserialize(typed_de).map_err(typed)?)
            }
            "DaskJob" => Resource::Job(Deserialize::deserialize(typed_de).map_err(typed)?),
            other => {
                return Err(err(format!(
                    "kind {other:?} is not one of DaskCluster, DaskWorkerGroup, DaskAutoscaler, DaskJob"
                )));
            }
        };
        out.push(r);
    }
    if out.is_empty() {
        return Err(ManifestError::File {
            file: file.to_owned(),
            reason: "no Dask resources in it".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name);
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn every_example_parses() {
        for f in [
            "daskcluster.yaml",
            "rask-cluster.yaml",
            "daskworkergroup.yaml",
            "daskautoscaler.yaml",
            "daskjob.yaml",
        ] {
            let r = parse(f, &example(f)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(r.len(), 1, "{f}");
        }
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let text = format!(
            "---\n{}\n---\n---\n{}",
            example("daskcluster.yaml"),
            example("daskautoscaler.yaml")
        );
        let r = parse("x.yaml", &text).unwrap();
        assert!(matches!(r[0], Resource::Cluster(_)));
        assert!(matches!(r[1], Resource::Autoscaler(_)));
    }

    #[test]
    fn bad_documents_name_the_document_and_the_problem() {
        let e = parse("x.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "x.yaml, document 1: apiVersion \"v1\" is not \"kubernetes.dask.org/v1\" (kind Pod)"
        );
        let text = "apiVersion: kubernetes.dask.org/v1\nkind: DaskAutoscaler\nmetadata: {name: a}\nspec: {cluster: c, minimum: one, maximum: 2}\n";
        let e = parse(
            "a.yaml",
            &format!("{}---\n{text}", example("daskcluster.yaml")),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("a.yaml, document 2: DaskAutoscaler a: spec.minimum"),
            "{e}"
        );
        let e = parse(
            "k.yaml",
            "apiVersion: kubernetes.dask.org/v1\nkind: DaskThing\nmetadata: {name: t}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("kind \"DaskThing\" is not one of"), "{e}");
        assert!(
            parse("e.yaml", "")
                .unwrap_err()
                .to_string()
                .contains("no Dask resources")
        );
        assert!(
            parse("e.yaml", "a: [")
                .unwrap_err()
                .to_string()
                .starts_with("e.yaml, document 1:")
        );
    }
}
