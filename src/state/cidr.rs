//! An IP prefix (CIDR), normalised so host bits are zero: used by sets, configuration and rules.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipvs_netlink::ipvs::Family;

/// An IP prefix, normalised so host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a prefix, clearing host bits; `None` if the length is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let fam = Family::of(&addr);
        if prefix > fam.max_prefix() {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// A single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Cidr {
            prefix: Family::of(&addr).max_prefix(),
            addr,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Cidr::new(*ip, self.prefix).is_some_and(|c| c.addr == self.addr)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Accepts `a.b.c.d/n`, `x::/n`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
                let prefix: u8 = p.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
                Cidr::new(addr, prefix).ok_or_else(|| format!("invalid CIDR {s:?}"))
            }
            None => s
                .parse::<IpAddr>()
                .map(Cidr::host)
                .map_err(|_| format!("invalid CIDR {s:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_normalises_and_contains() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(&"10.200.0.1".parse().unwrap()));
        assert!(!c.contains(&"11.0.0.1".parse().unwrap()));
        assert!(!c.contains(&"::1".parse().unwrap()));
        let c: Cidr = "fd00::1/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::/64");
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains(&"1.2.3.4".parse().unwrap())
        );
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix(), 32);
        for bad in ["1.2.3.4/33", "x/3", "1.2.3.4/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
