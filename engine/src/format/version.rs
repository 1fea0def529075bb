//! Causality: version vectors and hybrid logical clocks.
//!
//! Every file version carries a [`VersionVector`] (device → the seq of that device's
//! commit that last changed the path in this version's history). The vector of a new
//! version is the vector of the version it replaced, with the writing device's entry
//! set to the seq of the commit that carries it. Comparing vectors tells whether one
//! version saw the other ([`Causality`]); truly concurrent versions are ordered by
//! their [`Hlc`] stamp and device id, never by trusting wall clocks alone.

use crate::format::id::DeviceId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How two versions relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// The left one happened before the right one (the right one saw it).
    Before,
    /// The left one happened after (saw) the right one.
    After,
    /// Neither saw the other.
    Concurrent,
}

/// device → seq. Absent entries are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<DeviceId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, device: &DeviceId) -> u64 {
        self.0.get(device).copied().unwrap_or(0)
    }

    /// This vector advanced by `device` writing in commit `seq`.
    pub fn advanced(&self, device: DeviceId, seq: u64) -> Self {
        let mut v = self.clone();
        let e = v.0.entry(device).or_insert(0);
        *e = (*e).max(seq);
        v
    }

    /// This vector with `device`'s entry set to `seq` (removed for 0): the base
    /// of a change written again under another id after `device`'s commit
    /// `seq + 1` could not be (it had seen `device`'s commits up to `seq`).
    pub fn with_entry(&self, device: DeviceId, seq: u64) -> Self {
        let mut v = self.clone();
        if seq == 0 {
            v.0.remove(&device);
        } else {
            v.0.insert(device, seq);
        }
        v
    }

    /// The least vector that dominates both.
    pub fn join(&self, other: &VersionVector) -> Self {
        let mut v = self.clone();
        for (d, s) in &other.0 {
            let e = v.0.entry(*d).or_insert(0);
            *e = (*e).max(*s);
        }
        v
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        let mut less = false;
        let mut greater = false;
        for d in self.0.keys().chain(other.0.keys()) {
            let (a, b) = (self.get(d), other.get(d));
            less |= a < b;
            greater |= a > b;
        }
        match (less, greater) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    /// Whether `self` saw `other` (after or equal).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        matches!(self.compare(other), Causality::After | Causality::Equal)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(|&s| s == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&DeviceId, &u64)> {
        self.0.iter()
    }
}

/// A hybrid logical clock stamp: milliseconds since the Unix epoch in the high 48
/// bits, a logical counter in the low 16. Monotonic per device even when the wall
/// clock steps back, and always above every stamp the device has observed.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    const LOGICAL_BITS: u32 = 16;

    pub fn from_parts(millis: u64, logical: u16) -> Self {
        Hlc((millis << Self::LOGICAL_BITS) | u64::from(logical))
    }

    /// Wall-clock milliseconds part.
    pub fn millis(&self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    /// The next stamp after `self` (the last one issued or observed) at wall time
    /// `now_ms`.
    pub fn tick(self, now_ms: u64) -> Hlc {
        if now_ms > self.millis() {
            Hlc::from_parts(now_ms, 0)
        } else {
            Hlc(self.0 + 1)
        }
    }

    /// Merges an observed remote stamp.
    pub fn observe(self, remote: Hlc) -> Hlc {
        self.max(remote)
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(n: u8) -> DeviceId {
        DeviceId([n; 16])
    }

    #[test]
    fn compare_and_join() {
        let a = VersionVector::new().advanced(dev(1), 1);
        let b = a.advanced(dev(2), 1);
        let c = a.advanced(dev(1), 2);
        assert_eq!(a.compare(&a), Causality::Equal);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(b.compare(&c), Causality::Concurrent);
        let j = b.join(&c);
        assert!(j.dominates(&b) && j.dominates(&c));
        assert_eq!(j.get(&dev(1)), 2);
        assert!(VersionVector::new().is_empty());
    }

    #[test]
    fn hlc_is_monotonic_even_if_clock_steps_back() {
        let t0 = Hlc::default().tick(1_000);
        let t1 = t0.tick(900);
        assert!(t1 > t0);
        assert_eq!(t1.millis(), 1_000);
        let t2 = t1.tick(2_000);
        assert_eq!(t2, Hlc::from_parts(2_000, 0));
        let seen = Hlc::from_parts(5_000, 3);
        assert!(t2.observe(seen).tick(2_001) > seen);
    }
}
