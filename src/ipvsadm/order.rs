//! ipvsadm's listing order: glibc's merge sort driven by libipvs's wrapping comparators.

use std::net::IpAddr;

use ipvs_netlink::ipvs::{DestinationEntry, Family, ServiceEntry, ServiceKey};

/// The address as libipvs sees it: four host-order 32-bit words, IPv4 in the first.
fn words(addr: &IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from(*a), 0, 0, 0],
        IpAddr::V6(a) => {
            let s = a.segments();
            let w = |i: usize| (u32::from(s[2 * i]) << 16) | u32::from(s[2 * i + 1]);
            [w(0), w(1), w(2), w(3)]
        }
    }
}

/// C's `int r = (unsigned)a - (unsigned)b;`: wraps, so it is not a total order.
fn wrapping_cmp(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// libipvs compares only as many words as the *first* entry's family has.
fn addr_cmp(family: Family, a: &[u32; 4], b: &[u32; 4]) -> i32 {
    let n = if family == Family::Inet6 { 4 } else { 1 };
    for i in 0..n {
        let r = wrapping_cmp(a[i], b[i]);
        if r != 0 {
            return r;
        }
    }
    0
}

/// `ipvs_cmp_services`: fwmark, family, protocol, address, port.
fn cmp_services(a: &ServiceEntry, b: &ServiceEntry) -> i32 {
    let parts = |k: &ServiceKey| -> (u32, u16, u16, [u32; 4], u16) {
        match k {
            ServiceKey::FwMark { mark, family } => (*mark, family.as_raw(), 0, [0; 4], 0),
            other => {
                // Every non-fwmark key has an address and a protocol.
                let addr = other.addr().map(|a| (words(&a.ip()), a.port()));
                let (w, port) = addr.unwrap_or(([0; 4], 0));
                (
                    0,
                    other.family().as_raw(),
                    other.protocol().map_or(0, |p| p.as_raw()),
                    w,
                    port,
                )
            }
        }
    };
    let (am, af, ap, aw, aport) = parts(&a.service.key);
    let (bm, bf, bp, bw, bport) = parts(&b.service.key);
    let r = wrapping_cmp(am, bm);
    if r != 0 {
        return r;
    }
    // u16 fields promote to int in C: plain subtraction, no wrap.
    let r = i32::from(af) - i32::from(bf);
    if r != 0 {
        return r;
    }
    // FWM services carry protocol TCP in libipvs; equal marks never reach here twice.
    let r = i32::from(ap) - i32::from(bp);
    if r != 0 {
        return r;
    }
    let fam = a.service.key.family();
    let r = addr_cmp(fam, &aw, &bw);
    if r != 0 {
        return r;
    }
    i32::from(aport) - i32::from(bport)
}

/// `ipvs_cmp_dests`: address (by the first entry's family), then port.
fn cmp_dests(a: &DestinationEntry, b: &DestinationEntry) -> i32 {
    let (aa, ba) = (a.destination.addr, b.destination.addr);
    let r = addr_cmp(a.destination.family(), &words(&aa.ip()), &words(&ba.ip()));
    if r != 0 {
        return r;
    }
    i32::from(aa.port()) - i32::from(ba.port())
}

/// glibc's `msort_with_tmp`: top-down, left half first, ties keep the left element.
fn msort<T: Clone>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    msort(&mut v[..n1], cmp);
    msort(&mut v[n1..], cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            merged.push(v[i].clone());
            i += 1;
        } else {
            merged.push(v[j].clone());
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..n1]);
    merged.extend_from_slice(&v[j..n]);
    v.clone_from_slice(&merged);
}

/// `msort` of `v`, done on indices and then applied as a permutation: the
/// merge levels copy 8-byte indices instead of cloning entries (a service
/// with its real servers) log n times, which dominated printing a
/// 100,000-service plan.
fn msort_in_place<T>(v: &mut [T], cmp: impl Fn(&T, &T) -> i32) {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    msort(&mut idx, &|a: &usize, b: &usize| cmp(&v[*a], &v[*b]));
    // Position k takes the element at idx[k]; follow each cycle once.
    for start in 0..idx.len() {
        let mut cur = start;
        while idx[cur] != usize::MAX {
            let src = idx[cur];
            idx[cur] = usize::MAX;
            if src == start {
                break;
            }
            v.swap(cur, src);
            cur = src;
        }
    }
}

/// Sorts services (with their destinations) the way `ipvsadm -L`/`-S` does.
///
/// The input must be in kernel dump order for the result to match ipvsadm.
pub fn sort_services<D>(table: &mut [(ServiceEntry, D)]) {
    msort_in_place(table, |a, b| cmp_services(&a.0, &b.0));
}

/// Sorts the real servers of one service the way ipvsadm does.
pub fn sort_destinations(dests: &mut [DestinationEntry]) {
    msort_in_place(dests, cmp_dests);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_netlink::ipvs::{Service, Stats};

    fn svc(key: ServiceKey) -> (ServiceEntry, ()) {
        (
            ServiceEntry {
                service: Service::new(key),
                stats: Stats::default(),
            },
            (),
        )
    }

    fn tcp(s: &str) -> ServiceKey {
        ServiceKey::Tcp(s.parse().unwrap())
    }

    #[test]
    fn wrapping_compare_puts_high_marks_first() {
        let mut t = vec![
            svc(tcp("10.0.0.1:80")),
            svc(ServiceKey::FwMark {
                mark: u32::MAX,
                family: Family::Inet,
            }),
            svc(ServiceKey::FwMark {
                mark: 7,
                family: Family::Inet,
            }),
        ];
        sort_services(&mut t);
        let keys: Vec<String> = t.iter().map(|(s, _)| s.service.key.to_string()).collect();
        assert_eq!(keys, ["FWM 4294967295", "TCP 10.0.0.1:80", "FWM 7"]);
    }

    #[test]
    fn sorting_through_indices_equals_the_direct_merge_sort() {
        // Keys with ties and wrapping comparisons, in a scrambled order.
        let v: Vec<(u32, u32)> = (0..500u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761)) % 37, i))
            .collect();
        let cmp = |a: &(u32, u32), b: &(u32, u32)| {
            wrapping_cmp(a.0.wrapping_mul(0x9000_0001), b.0.wrapping_mul(0x9000_0001))
        };
        let mut direct = v.clone();
        msort(&mut direct, &cmp);
        let mut via = v;
        msort_in_place(&mut via, cmp);
        assert_eq!(via, direct);
    }

    #[test]
    fn addresses_far_apart_compare_backwards() {
        // 10.x - 192.x wraps to a positive int: ipvsadm puts 192.168 first.
        let mut t = vec![svc(tcp("10.0.0.1:80")), svc(tcp("192.168.0.1:80"))];
        sort_services(&mut t);
        assert_eq!(t[0].0.service.key, tcp("192.168.0.1:80"));
    }
}
