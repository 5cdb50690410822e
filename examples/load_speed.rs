//! Load time of synthetic manifests (10,000 Services by default): a directory of YAML files, of JSON files, and one multi-document YAML file.
//!
//! `cargo run --example load_speed [SERVICES]`; prints the best of 3 loads of each.

use std::time::Instant;

use anyhow::{Context, Result, ensure};
use kube_ipvs::source::files;
use kube_ipvs::source::synthetic::{Cluster, Format};

fn best_of_3(path: &std::path::Path, services: usize) -> Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let m = files::load(path)?;
        best = best.min(t.elapsed().as_secs_f64());
        ensure!(
            m.services.len() == services,
            "loaded {} services",
            m.services.len()
        );
    }
    Ok(best)
}

fn main() -> Result<()> {
    let services: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().context("SERVICES must be a number")?,
        None => 10_000,
    };
    for format in [Format::Yaml, Format::Json] {
        let dir = tempfile::tempdir()?;
        Cluster::new(services, 10, "node-a")?
            .with_format(format)
            .write(dir.path())?;
        let s = best_of_3(dir.path(), services)?;
        println!("{format:?} directory: {services} services in {s:.3} s");
        if format == Format::Yaml {
            // The same objects as one stream of `---`-separated documents.
            let mut names: Vec<_> = std::fs::read_dir(dir.path())?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            names.sort();
            let mut all = String::new();
            for p in names {
                all.push_str("---\n");
                all.push_str(&std::fs::read_to_string(p)?);
            }
            let one = tempfile::tempdir()?;
            let file = one.path().join("all.yaml");
            std::fs::write(&file, all)?;
            let s = best_of_3(&file, services)?;
            println!("Yaml single file: {services} services in {s:.3} s");
        }
    }
    Ok(())
}
