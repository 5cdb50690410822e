//! YAML reading for manifests and the config file: serde-saphyr (safe Rust) with kube-ipvs's limits.
//!
//! Documents are read into `serde_json::Value`, the tree the manifest and
//! config readers walk; see docs/dependencies.md for why serde-saphyr.

use serde_json::Value;

/// Deepest nesting accepted (the library's default). Kubernetes objects nest
/// about 8 levels; the limit keeps hostile input from exhausting the stack.
pub const MAX_DEPTH: usize = 64;

/// Most events that aliases may replay in one input. Real manifests rarely
/// use aliases at all; an alias-expansion bomb ("billion laughs") needs
/// millions, and is refused here after a bounded amount of work and memory.
pub const MAX_ALIAS_REPLAY: usize = 100_000;

/// Most alias uses of one anchor: a bomb reuses each anchor many times.
pub const MAX_ALIASES_PER_ANCHOR: usize = 10_000;

/// The parser options both readers use.
pub fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    // Events, nodes, documents and scalar bytes grow linearly with the input,
    // which the caller already holds in memory: a manifest file of 10,000s of
    // objects must not hit the library's config-sized defaults (1,024
    // documents, 250,000 nodes). Aliases, the one non-linear growth, keep
    // their limits below.
    budget.max_reader_input_bytes = None;
    budget.max_events = usize::MAX;
    budget.max_nodes = usize::MAX;
    budget.max_documents = usize::MAX;
    budget.max_total_scalar_bytes = usize::MAX;
    budget.max_depth = MAX_DEPTH;
    let mut o = serde_saphyr::Options::default();
    o.budget = Some(budget);
    o.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAY;
    o.alias_limits.max_alias_expansions_per_anchor = MAX_ALIASES_PER_ANCHOR;
    // YAML 1.2 booleans only (true/false), as serde_yaml read them: Kubernetes'
    // YAML 1.1 reader would also take yes/no/on/off/y/n, which turns a name
    // like `n` or a label value `no` into a boolean. Here those stay strings,
    // so a boolean field spelled `yes` is refused with a clear error.
    o.strict_booleans = true;
    // `0755` is octal (493) to Kubernetes' YAML 1.1 reader and 755 to YAML
    // 1.2; neither guess is safe for a port, so such spellings stay strings
    // and a numeric field refuses them.
    o.leading_zero_numbers_as_strings = true;
    // Comments are never read; skipping them saves their copies.
    o.emit_comments = false;
    // One-line messages ("... at line L, column C"): ours add the file and document.
    o.with_snippet = false;
    o
}

/// One YAML document as a JSON value.
pub fn from_str(text: &str) -> Result<Value, serde_saphyr::Error> {
    serde_saphyr::from_str_with_options(text, options())
}

/// Calls `each` with the index and value (or error) of every non-empty
/// document of `text`, in order, until it returns an error. After a syntax
/// error or an exceeded limit the library yields no further documents.
pub fn for_each_document<E>(
    text: &str,
    mut each: impl FnMut(usize, Result<Value, serde_saphyr::Error>) -> Result<(), E>,
) -> Result<(), E> {
    let mut input = text.as_bytes();
    for (doc, v) in serde_saphyr::read_with_options::<_, Value>(&mut input, options()).enumerate() {
        each(doc, v)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn docs(text: &str) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        for_each_document(text, |_, v| {
            out.push(v.map_err(|e| e.to_string())?);
            Ok::<(), String>(())
        })?;
        Ok(out)
    }

    /// Nine levels of nine aliases each: 9^9 (387 million) strings if expanded.
    pub(crate) fn billion_laughs() -> String {
        let mut s = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..=9 {
            let p = format!("*a{}", i - 1);
            s.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 9].join(", ")));
        }
        s
    }

    #[test]
    fn alias_bombs_are_refused_with_a_clear_error() {
        let bomb = billion_laughs();
        let e = from_str(&bomb).unwrap_err().to_string();
        assert!(e.contains("alias"), "{e}");
        let e = docs(&format!("kind: Service\n---\n{bomb}")).unwrap_err();
        assert!(e.contains("alias"), "{e}");
        // Ordinary alias use still works.
        let v = from_str("a: &x {p: 1}\nb: *x\n").unwrap();
        assert_eq!(v["b"]["p"], 1);
    }

    #[test]
    fn nesting_is_limited() {
        let ok = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(from_str(&ok).is_ok());
        for deep in [
            format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
            (0..10_000)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect(),
        ] {
            let e = from_str(&deep).unwrap_err().to_string();
            assert!(!e.is_empty());
        }
    }

    #[test]
    fn errors_give_line_and_column() {
        let e = from_str("a: 1\nb: [\n").unwrap_err().to_string();
        assert!(e.contains("line"), "{e}");
        let e = from_str("a: 1\na: 2\n").unwrap_err().to_string();
        assert!(e.contains("uplicate"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn ambiguous_scalars_stay_strings() {
        // YAML 1.1 booleans are strings; YAML 1.2 spellings are booleans.
        let v = from_str("a: yes\nb: on\nc: n\nd: true\ne: False\n").unwrap();
        assert_eq!(v["a"], "yes");
        assert_eq!(v["b"], "on");
        assert_eq!(v["c"], "n");
        assert_eq!(v["d"], true);
        assert_eq!(v["e"], false);
        // Leading zeros: octal to YAML 1.1, decimal to 1.2; kept as written.
        let v = from_str("p: 0800\nq: 0755\nr: 0x1F\ns: 0\nt: 8080\nu: 0.5\n").unwrap();
        assert_eq!(v["p"], "0800");
        assert_eq!(v["q"], "0755");
        assert_eq!(v["r"], 31);
        assert_eq!(v["s"], 0);
        assert_eq!(v["t"], 8080);
        assert_eq!(v["u"], 0.5);
    }

    #[test]
    fn documents_are_counted_without_empty_ones() {
        let v = docs("---\na: 1\n---\n---\nb: 2\n...\n---\n").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["b"], 2);
        assert!(docs("").unwrap().is_empty());
    }
}
