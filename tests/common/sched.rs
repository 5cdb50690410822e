//! A scheduler the running kernel cannot load, so the missing-scheduler fallback is tested on every kernel of the matrix.

use std::os::unix::fs::PermissionsExt;

use super::try_sh;

/// The kernel's usermode-helper path for module autoloading.
const MODPROBE_PATH: &str = "/proc/sys/kernel/modprobe";

/// `twos`, made unavailable for as long as this lives.
///
/// Debian 6.1 has no `ip_vs_twos` (a newer scheduler), so there it is missing as
/// a node lacking the module would have it. 6.12 ships the module, and every
/// other scheduler kube-ipvs accepts is in both kernels, so there the module
/// is unloaded and the kernel's autoloader is pointed at a wrapper that
/// refuses it: `ip_vs_scheduler_get` calls `request_module("ip_vs_%s")`,
/// which runs the program named in /proc/sys/kernel/modprobe, and an
/// unregistered scheduler then makes IP_VS_CMD_NEW_SERVICE answer ENOENT,
/// exactly as on a node without the module. Dropping it restores the path.
/// The path is global to the VM: only one test at a time may hold this.
pub struct MissingScheduler {
    pub name: &'static str,
    /// How the kernel lacks it, for messages.
    pub how: &'static str,
    restore: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for MissingScheduler {
    fn drop(&mut self) {
        if let Some(old) = self.restore.take()
            && let Err(e) = std::fs::write(MODPROBE_PATH, &old)
        {
            eprintln!("could not restore {MODPROBE_PATH} to {old}: {e}");
        }
    }
}

/// A scheduler the model accepts and the running kernel cannot load.
pub fn missing_scheduler() -> MissingScheduler {
    let loaded = std::path::Path::new("/sys/module/ip_vs_twos").exists();
    if !loaded && !try_sh("modprobe -n ip_vs_twos").0 {
        return MissingScheduler {
            name: "twos",
            how: "this kernel has no ip_vs_twos module",
            restore: None,
            _dir: None,
        };
    }
    if loaded {
        // Another test's namespace may still be going away (its services
        // hold the module until the netns cleanup runs): retry a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (ok, _, err) = try_sh("rmmod ip_vs_twos");
            if ok {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ip_vs_twos is loaded and cannot be unloaded ({err}): a service elsewhere in the VM uses it; run this test in a fresh lab boot"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    let old = std::fs::read_to_string(MODPROBE_PATH)
        .expect("read /proc/sys/kernel/modprobe")
        .trim()
        .to_string();
    let dir = tempfile::tempdir().expect("a temporary directory for the modprobe wrapper");
    let wrapper = dir.path().join("modprobe");
    // The kernel runs `modprobe -q -- ip_vs_twos`; everything else goes through.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = ip_vs_twos ] && exit 1; done\nexec {old} \"$@\"\n"
        ),
    )
    .expect("write the modprobe wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .expect("make the modprobe wrapper executable");
    std::fs::write(MODPROBE_PATH, wrapper.to_str().expect("a UTF-8 temp path"))
        .expect("write /proc/sys/kernel/modprobe (the lab runs tests as root)");
    MissingScheduler {
        name: "twos",
        how: "ip_vs_twos unloaded and refused to the kernel's module autoloader",
        restore: Some(old),
        _dir: Some(dir),
    }
}
