//! Fuzzes `kube-ipvs ipvs restore` input (ipvsadm -R text): parsed, then turned
//! into IPVS operations and batched against a target that accepts everything.
#![no_main]

use ipvs_netlink::Error;
use ipvs_netlink::ipvs::Operation;
use kube_ipvs::ipvsadm::{RestoreTarget, apply_restore, parse_restore};
use libfuzzer_sys::fuzz_target;

struct Accept;

impl RestoreTarget for Accept {
    fn apply(&mut self, ops: &[Operation]) -> Vec<Result<(), Error>> {
        ops.iter().map(|_| Ok(())).collect()
    }

    fn flush(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_restore(text) {
        Ok(lines) => {
            let failures = apply_restore(&mut Accept, &lines);
            assert!(
                failures.is_empty(),
                "a target that accepts all reported {failures:?}"
            );
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
