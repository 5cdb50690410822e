//! A plan: the ordered operations of one sync, plus what was noticed on the way.

use crate::state::Op;

/// The output of a sync: ordered operations plus what was noticed on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// For drift repair / adoption, each op is one difference found.
    pub ops: Vec<Op>,
    /// Operations our own state model rejected: always a bug; never expected.
    pub internal_errors: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Stable sort into phases; within a phase, generation order is kept.
    ///
    /// A counting sort applied in place: its scratch is 5 bytes per op,
    /// where a merge sort of a 140,000-op first sync takes 8 MB.
    pub(crate) fn order(&mut self) {
        let phases: Vec<u8> = self.ops.iter().map(Op::phase).collect();
        let mut next = [0u32; 256];
        for p in &phases {
            next[*p as usize] += 1;
        }
        let mut at = 0;
        for n in next.iter_mut() {
            (*n, at) = (at, at + *n);
        }
        // Where each op goes, then the permutation followed cycle by cycle.
        let mut dest: Vec<u32> = phases
            .iter()
            .map(|p| {
                let d = next[*p as usize];
                next[*p as usize] += 1;
                d
            })
            .collect();
        drop(phases);
        for i in 0..dest.len() {
            while dest[i] as usize != i {
                let j = dest[i] as usize;
                self.ops.swap(i, j);
                dest.swap(i, j);
            }
        }
    }
}
