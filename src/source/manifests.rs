//! Service, EndpointSlice and Node objects from YAML/JSON files (multi-document, `List` kinds), for one-shot runs and tests.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;

/// Why manifests could not be loaded; names the file and the document (0-based,
/// counting the non-empty documents).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML error is in the message and not a `source`: serde-saphyr's
    /// errors chain their own cause, so `{:#}` would print it three times.
    #[error("{}: document {doc} is not valid YAML: {error}", path.display())]
    Yaml {
        path: PathBuf,
        doc: usize,
        error: Box<serde_saphyr::Error>,
    },
    #[error("{}: document {doc}: invalid {kind}{}: {source}", path.display(), name_suffix(name))]
    Object {
        path: PathBuf,
        doc: usize,
        kind: String,
        name: Option<String>,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: no .yaml, .yml or .json files in this directory", path.display())]
    Empty { path: PathBuf },
}

fn name_suffix(name: &Option<String>) -> String {
    name.as_ref().map(|n| format!(" {n:?}")).unwrap_or_default()
}

/// Everything loaded, in file and document order.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
    pub nodes: Vec<Node>,
    /// Skipped documents (unknown kinds, no kind): one line each, naming the file.
    pub warnings: Vec<String>,
}

impl Manifests {
    /// Moves `other`'s objects and warnings after this one's (file order kept).
    pub fn append(&mut self, other: Manifests) {
        self.services.extend(other.services);
        self.slices.extend(other.slices);
        self.nodes.extend(other.nodes);
        self.warnings.extend(other.warnings);
    }

    /// The Node called `name`, if the manifests hold it.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
    }
}

/// Parses the documents of `text` (YAML, so JSON too) into `m`; `path` names the source in errors.
pub fn load_str(text: &str, path: &Path, m: &mut Manifests) -> Result<(), ManifestError> {
    // JSON (what the API server sends) parses several times faster with a JSON
    // parser; anything it rejects goes through YAML, which reports the error.
    if text.trim_start().starts_with('{')
        && let Ok(docs) = serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .collect::<Result<Vec<Value>, _>>()
    {
        for (doc, v) in docs.into_iter().enumerate() {
            if !v.is_null() {
                add(v, path, doc, None, m)?;
            }
        }
        return Ok(());
    }
    // Empty documents (a trailing `---`) are skipped and not counted.
    crate::yaml::for_each_document(text, |doc, v| {
        let v = v.map_err(|error| ManifestError::Yaml {
            path: path.to_path_buf(),
            doc,
            error: Box::new(error),
        })?;
        add(v, path, doc, None, m)
    })
}

/// Dispatches one object by `kind` (`item_kind`: the kind implied by a typed list).
fn add(
    mut v: Value,
    path: &Path,
    doc: usize,
    item_kind: Option<&str>,
    m: &mut Manifests,
) -> Result<(), ManifestError> {
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .or(item_kind)
        .map(str::to_string);
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(kind) = kind else {
        m.warnings.push(format!(
            "{}: document {doc} has no kind; skipped",
            path.display()
        ));
        return Ok(());
    };
    let err = |source| ManifestError::Object {
        path: path.to_path_buf(),
        doc,
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    // Items of a typed list carry no kind/apiVersion; the types want them consistent.
    if item_kind.is_some()
        && let Some(o) = v.as_object_mut()
    {
        o.entry("kind")
            .or_insert_with(|| Value::from(kind.as_str()));
    }
    match kind.as_str() {
        "Service" => m
            .services
            .push(serde_json::from_value(with_api(v, "v1")).map_err(err)?),
        "EndpointSlice" => m
            .slices
            .push(serde_json::from_value(with_api(v, "discovery.k8s.io/v1")).map_err(err)?),
        "Node" => m
            .nodes
            .push(serde_json::from_value(with_api(v, "v1")).map_err(err)?),
        "List" | "ServiceList" | "EndpointSliceList" | "NodeList" => {
            let item = kind.strip_suffix("List").filter(|k| !k.is_empty());
            let items = match v.get_mut("items").map(Value::take) {
                Some(Value::Array(a)) => a,
                Some(Value::Null) | None => Vec::new(),
                Some(_) => {
                    return Err(err(serde::de::Error::custom("`items` must be a list")));
                }
            };
            for it in items {
                add(it, path, doc, item, m)?;
            }
        }
        other => m.warnings.push(format!(
            "{}: document {doc}: kind {other}{} is not used by kube-ipvs; skipped",
            path.display(),
            name_suffix(&name)
        )),
    }
    Ok(())
}

/// Fills in a missing `apiVersion` (list items often omit it).
fn with_api(mut v: Value, api: &str) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.entry("apiVersion").or_insert_with(|| Value::from(api));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifests, ManifestError> {
        let mut m = Manifests::default();
        load_str(text, Path::new("t.yaml"), &mut m).map(|()| m)
    }

    const SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP, targetPort: 8080}]
";

    #[test]
    fn multi_document_kind_dispatch() {
        let text = format!(
            "{SVC}---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{{addresses: [10.0.0.1]}}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: v1
kind: Node
metadata: {{name: n1}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: cm}}
---
"
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.slices.len(), 1);
        assert_eq!(m.slices[0].endpoints[0].addresses, vec!["10.0.0.1"]);
        assert!(m.node("n1").is_some() && m.node("n2").is_none());
        assert_eq!(m.warnings.len(), 1);
        assert!(
            m.warnings[0].contains("t.yaml: document 3: kind ConfigMap \"cm\""),
            "{:?}",
            m.warnings
        );
    }

    #[test]
    fn lists_typed_and_generic() {
        let m = parse(
            "apiVersion: v1
kind: ServiceList
items:
- metadata: {name: a, namespace: x}
  spec: {clusterIP: 10.96.0.1, ports: [{port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: n1}
- apiVersion: v1
  kind: Service
  metadata: {name: b, namespace: x}
",
        )
        .unwrap();
        assert_eq!(m.services.len(), 2);
        assert_eq!(m.nodes.len(), 1);
        assert!(m.warnings.is_empty());
    }

    #[test]
    fn errors_name_file_document_and_object() {
        let e = parse(&format!(
            "{SVC}---\napiVersion: v1\nkind: Service\nmetadata: {{name: bad}}\nspec: {{ports: 7}}\n"
        ))
        .unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("t.yaml: document 1: invalid Service \"bad\""),
            "{s}"
        );
        let e = parse("kind: Service\nmetadata: [\n").unwrap_err();
        assert!(matches!(e, ManifestError::Yaml { doc: 0, .. }), "{e}");
        let m = parse("metadata: {name: x}\n").unwrap();
        assert!(m.warnings[0].contains("no kind"), "{:?}", m.warnings);
    }

    #[test]
    fn json_documents_parse_like_yaml() {
        let json = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"kind": "Service", "metadata": {"name": "a", "namespace": "x"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 53, "protocol": "UDP"}]}}]}
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}"#;
        let m = parse(json).unwrap();
        let y = parse(&json.replace("}\n            {", "}\n---\n{")).unwrap();
        assert_eq!(m.services, y.services);
        assert_eq!((m.services.len(), m.nodes.len()), (1, 1));
        // Invalid objects are named with their document, as in YAML.
        let e = parse(r#"{"kind": "Node"} {"kind": "Service", "metadata": {"name": "bad"}, "spec": {"ports": 7}}"#)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t.yaml: document 1: invalid Service \"bad\""),
            "{e}"
        );
        // Not JSON after all: YAML parses it (or reports the error).
        let m = parse("{kind: Node, metadata: {name: n2}}\n").unwrap();
        assert!(m.node("n2").is_some());
    }

    #[test]
    fn an_alias_bomb_names_the_file_and_document() {
        let bomb = crate::yaml::tests::billion_laughs();
        let mut m = Manifests::default();
        let e = load_str(
            &format!("kind: Node\nmetadata: {{name: n}}\n---\n{bomb}"),
            std::path::Path::new("bomb.yaml"),
            &mut m,
        )
        .unwrap_err();
        // As the CLI prints it (the whole chain): the reason once.
        let e = format!("{:#}", anyhow::Error::from(e));
        assert!(
            e.starts_with("bomb.yaml: document 1 is not valid YAML"),
            "{e}"
        );
        assert_eq!(e.matches("alias replay limit exceeded").count(), 1, "{e}");
    }

    #[test]
    fn a_port_written_with_a_leading_zero_is_refused() {
        // So a port written `0800` is refused, not read as 800 or 512.
        let mut m = Manifests::default();
        let e = load_str(
            "kind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 0800}]}\n",
            std::path::Path::new("t.yaml"),
            &mut m,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("invalid Service \"s\""), "{e}");
    }
}
