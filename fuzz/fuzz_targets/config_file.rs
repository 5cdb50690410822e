//! Fuzzes the `--config` file: a KubeProxyConfiguration (YAML or JSON) parsed,
//! then resolved with upstream's defaults and cross-field checks.
#![no_main]

use kube_ipvs::config::parse_str;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parse_str(text) {
        let _ = parsed.values.resolve();
    }
});
