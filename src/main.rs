//! The `kube-ipvs` binary.

fn main() -> anyhow::Result<()> {
    println!("kube-ipvs {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
