//! The options of ipvsadm's rule syntax: names (short and long), how each takes its value, and the ones restore refuses.

/// How an option takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Arg {
    None,
    Required,
    Optional,
}

/// An option, by its long name.
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

impl Name {
    /// How the option takes its value.
    pub(super) fn arg(self) -> Arg {
        match self {
            Name::AddService => Arg::None,
            Name::EditService => Arg::None,
            Name::DeleteService => Arg::None,
            Name::Clear => Arg::None,
            Name::AddServer => Arg::None,
            Name::EditServer => Arg::None,
            Name::DeleteServer => Arg::None,
            Name::TcpService => Arg::Required,
            Name::UdpService => Arg::Required,
            Name::SctpService => Arg::Required,
            Name::FwmarkService => Arg::Required,
            Name::Scheduler => Arg::Required,
            Name::Persistent => Arg::Optional,
            Name::Netmask => Arg::Required,
            Name::RealServer => Arg::Required,
            Name::Masquerading => Arg::None,
            Name::Ipip => Arg::None,
            Name::Gatewaying => Arg::None,
            Name::Weight => Arg::Required,
            Name::UThreshold => Arg::Required,
            Name::LThreshold => Arg::Required,
            Name::Ipv6 => Arg::None,
            Name::Ops => Arg::None,
            Name::Pe => Arg::Required,
            Name::SchedFlags => Arg::Required,
            Name::TunType => Arg::Required,
            Name::TunPort => Arg::Required,
            Name::TunNocsum => Arg::None,
            Name::TunCsum => Arg::None,
            Name::TunRemcsum => Arg::None,
        }
    }
}

/// Resolves a short or long option name. Short names are matched as one
/// byte: a restore is mostly `-a -t ADDR -r ADDR -m -w 1`, line after line.
pub(super) fn lookup(name: &str) -> Option<Name> {
    if let [b] = name.as_bytes() {
        return Some(match b {
            b'A' => Name::AddService,
            b'E' => Name::EditService,
            b'D' => Name::DeleteService,
            b'C' => Name::Clear,
            b'a' => Name::AddServer,
            b'e' => Name::EditServer,
            b'd' => Name::DeleteServer,
            b't' => Name::TcpService,
            b'u' => Name::UdpService,
            b'f' => Name::FwmarkService,
            b's' => Name::Scheduler,
            b'p' => Name::Persistent,
            b'M' => Name::Netmask,
            b'r' => Name::RealServer,
            b'm' => Name::Masquerading,
            b'i' => Name::Ipip,
            b'g' => Name::Gatewaying,
            b'w' => Name::Weight,
            b'x' => Name::UThreshold,
            b'y' => Name::LThreshold,
            b'6' => Name::Ipv6,
            b'o' => Name::Ops,
            b'b' => Name::SchedFlags,
            _ => return None,
        });
    }
    Some(match name {
        "add-service" => Name::AddService,
        "edit-service" => Name::EditService,
        "delete-service" => Name::DeleteService,
        "clear" => Name::Clear,
        "add-server" => Name::AddServer,
        "edit-server" => Name::EditServer,
        "delete-server" => Name::DeleteServer,
        "tcp-service" => Name::TcpService,
        "udp-service" => Name::UdpService,
        "sctp-service" => Name::SctpService,
        "fwmark-service" => Name::FwmarkService,
        "scheduler" => Name::Scheduler,
        "persistent" => Name::Persistent,
        "netmask" => Name::Netmask,
        "real-server" => Name::RealServer,
        "masquerading" => Name::Masquerading,
        "ipip" => Name::Ipip,
        "gatewaying" => Name::Gatewaying,
        "weight" => Name::Weight,
        "u-threshold" => Name::UThreshold,
        "l-threshold" => Name::LThreshold,
        "ipv6" => Name::Ipv6,
        "ops" => Name::Ops,
        "pe" => Name::Pe,
        "sched-flags" => Name::SchedFlags,
        "tun-type" => Name::TunType,
        "tun-port" => Name::TunPort,
        "tun-nocsum" => Name::TunNocsum,
        "tun-csum" => Name::TunCsum,
        "tun-remcsum" => Name::TunRemcsum,
        _ => return None,
    })
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
