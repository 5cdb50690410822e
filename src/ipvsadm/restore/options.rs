//! The options of ipvsadm's rule syntax: names (short and long), how each takes its value, and the ones restore refuses.

/// How an option takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Arg {
    None,
    Required,
    Optional,
}

/// An option (its names are in `OPTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Name {
    AddService,
    EditService,
    DeleteService,
    Clear,
    AddServer,
    EditServer,
    DeleteServer,
    TcpService,
    UdpService,
    SctpService,
    FwmarkService,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

/// Every option: its short name (if any), long name and how it takes its value.
const OPTIONS: &[(Name, Option<u8>, &str, Arg)] = &[
    (Name::AddService, Some(b'A'), "add-service", Arg::None),
    (Name::EditService, Some(b'E'), "edit-service", Arg::None),
    (Name::DeleteService, Some(b'D'), "delete-service", Arg::None),
    (Name::Clear, Some(b'C'), "clear", Arg::None),
    (Name::AddServer, Some(b'a'), "add-server", Arg::None),
    (Name::EditServer, Some(b'e'), "edit-server", Arg::None),
    (Name::DeleteServer, Some(b'd'), "delete-server", Arg::None),
    (Name::TcpService, Some(b't'), "tcp-service", Arg::Required),
    (Name::UdpService, Some(b'u'), "udp-service", Arg::Required),
    (Name::SctpService, None, "sctp-service", Arg::Required),
    (
        Name::FwmarkService,
        Some(b'f'),
        "fwmark-service",
        Arg::Required,
    ),
    (Name::Scheduler, Some(b's'), "scheduler", Arg::Required),
    (Name::Persistent, Some(b'p'), "persistent", Arg::Optional),
    (Name::Netmask, Some(b'M'), "netmask", Arg::Required),
    (Name::RealServer, Some(b'r'), "real-server", Arg::Required),
    (Name::Masquerading, Some(b'm'), "masquerading", Arg::None),
    (Name::Ipip, Some(b'i'), "ipip", Arg::None),
    (Name::Gatewaying, Some(b'g'), "gatewaying", Arg::None),
    (Name::Weight, Some(b'w'), "weight", Arg::Required),
    (Name::UThreshold, Some(b'x'), "u-threshold", Arg::Required),
    (Name::LThreshold, Some(b'y'), "l-threshold", Arg::Required),
    (Name::Ipv6, Some(b'6'), "ipv6", Arg::None),
    (Name::Ops, Some(b'o'), "ops", Arg::None),
    (Name::Pe, None, "pe", Arg::Required),
    (Name::SchedFlags, Some(b'b'), "sched-flags", Arg::Required),
    (Name::TunType, None, "tun-type", Arg::Required),
    (Name::TunPort, None, "tun-port", Arg::Required),
    (Name::TunNocsum, None, "tun-nocsum", Arg::None),
    (Name::TunCsum, None, "tun-csum", Arg::None),
    (Name::TunRemcsum, None, "tun-remcsum", Arg::None),
];

/// Resolves a short or long option name. A short name is compared as one
/// byte, never as a string: a restore is mostly `-a -t ADDR -r ADDR -m -w 1`,
/// line after line.
pub(super) fn lookup(name: &str) -> Option<(Name, Arg)> {
    let found = match name.as_bytes() {
        [b] => OPTIONS.iter().find(|o| o.1 == Some(*b)),
        _ => OPTIONS.iter().find(|o| o.2 == name),
    };
    found.map(|&(n, _, _, arg)| (n, arg))
}

/// ipvsadm commands and options that make no sense in restore input.
pub(super) fn unsupported(name: &str) -> Option<&'static str> {
    match name {
        "L" | "l" | "list" | "S" | "save" | "R" | "restore" | "Z" | "zero" => {
            Some("listing, saving, restoring and zeroing are not table changes")
        }
        "set" | "start-daemon" | "stop-daemon" => {
            Some("timeouts and the sync daemon are not part of the table")
        }
        "h" | "help" | "v" | "version" => Some("help and version are not table changes"),
        _ => None,
    }
}
