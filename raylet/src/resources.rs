//! Resource quantities and sets: what a node has, what is free, what a task or actor needs.
//!
//! Quantities are fixed point with a resolution of 1/10,000 of a unit (as in Ray), so that
//! fractional GPUs add and subtract exactly; a float never enters the accounting.

use std::fmt;
use std::sync::{Arc, LazyLock};

/// Units per whole resource.
const SCALE: u64 = 10_000;

/// The well-known resource names.
pub const CPU: &str = "CPU";
/// GPUs, counted per device.
pub const GPU: &str = "GPU";
/// Memory, in bytes.
pub const MEMORY: &str = "memory";

/// An amount of one resource, in units of 1/10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity(u64);

/// A quantity given by a user or a peer is not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// Negative, not a number, or infinite.
    #[error("resource {name:?}: {value} is not a finite, non-negative amount")]
    Invalid {
        /// The resource.
        name: String,
        /// The value given.
        value: f64,
    },
    /// Larger than the accounting can hold.
    #[error("resource {name:?}: {value} is too large")]
    TooLarge {
        /// The resource.
        name: String,
        /// The value given.
        value: f64,
    },
    /// More was released than is in use.
    #[error("resource {name:?}: releasing more than is held")]
    OverRelease {
        /// The resource.
        name: String,
    },
}

impl Quantity {
    /// No resource.
    pub const ZERO: Quantity = Quantity(0);

    /// Whole units.
    pub const fn units(units: u64) -> Quantity {
        Quantity(units * SCALE)
    }

    /// From a float, rounded to the nearest 1/10,000.
    pub fn from_f64(name: &str, value: f64) -> Result<Quantity, ResourceError> {
        if !value.is_finite() || value < 0.0 {
            return Err(ResourceError::Invalid { name: name.to_owned(), value });
        }
        let scaled = (value * SCALE as f64).round();
        if scaled >= u64::MAX as f64 / 2.0 {
            return Err(ResourceError::TooLarge { name: name.to_owned(), value });
        }
        Ok(Quantity(scaled as u64))
    }

    /// As a float, for display and scores.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    /// Whether this is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// A resource's name, shared: the well-known names are one allocation each for the whole
/// process, so comparing them is comparing pointers (a ten-thousand-node decision compares
/// names millions of times).
#[derive(Debug, Clone, Eq)]
struct Name(Arc<str>);

impl Name {
    fn new(name: &str) -> Name {
        static WELL_KNOWN: LazyLock<[Arc<str>; 3]> =
            LazyLock::new(|| [CPU.into(), GPU.into(), MEMORY.into()]);
        match WELL_KNOWN.iter().find(|known| &***known == name) {
            Some(known) => Name(known.clone()),
            None => Name(name.into()),
        }
    }

    fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

/// Amounts by resource name. Absent means zero.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceSet {
    /// Sorted by name; no zero amounts. A node has a handful of resources (a few more per
    /// placement-group bundle it holds): a sorted vector beats a tree here.
    amounts: Vec<(Name, Quantity)>,
}

impl ResourceSet {
    /// The empty set.
    pub fn new() -> Self {
        ResourceSet::default()
    }

    /// Adds `quantity` of `name` (builder style).
    pub fn with(mut self, name: &str, quantity: Quantity) -> Self {
        self.set(name, quantity);
        self
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.amounts.binary_search_by(|(known, _)| known.as_str().cmp(name))
    }

    /// Sets the amount of `name`.
    pub fn set(&mut self, name: &str, quantity: Quantity) {
        match (self.position(name), quantity.is_zero()) {
            (Ok(at), true) => {
                self.amounts.remove(at);
            }
            (Ok(at), false) => self.amounts[at].1 = quantity,
            (Err(_), true) => {}
            (Err(at), false) => self.amounts.insert(at, (Name::new(name), quantity)),
        }
    }

    /// The amount of `name`.
    pub fn get(&self, name: &str) -> Quantity {
        self.position(name).map_or(Quantity::ZERO, |at| self.amounts[at].1)
    }

    /// Each resource with a non-zero amount, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Quantity)> {
        self.amounts.iter().map(|(name, quantity)| (name.as_str(), *quantity))
    }

    /// Each of `demand`'s resources with the amount here (both sorted: one walk).
    fn matched<'a>(&'a self, demand: &'a ResourceSet) -> impl Iterator<Item = (Quantity, Quantity)> + 'a {
        let mut here = self.amounts.iter().peekable();
        demand.amounts.iter().map(move |(name, wanted)| {
            while here.next_if(|(known, _)| known < name).is_some() {}
            let have = here.next_if(|(known, _)| known == name).map_or(Quantity::ZERO, |(_, have)| *have);
            (*wanted, have)
        })
    }

    /// Whether every amount of `demand` is available here.
    pub fn contains(&self, demand: &ResourceSet) -> bool {
        self.matched(demand).all(|(wanted, have)| have >= wanted)
    }

    /// Takes `demand` out, or changes nothing and returns `false` if it does not fit.
    pub fn try_acquire(&mut self, demand: &ResourceSet) -> bool {
        if !self.contains(demand) {
            return false;
        }
        for (name, quantity) in demand.iter() {
            let left = Quantity(self.get(name).0 - quantity.0);
            self.set(name, left);
        }
        true
    }

    /// Takes `demand` out as far as there is any (what another node is believed to hold
    /// until its next report); never below zero.
    pub fn saturating_take(&mut self, demand: &ResourceSet) {
        for (name, quantity) in demand.iter() {
            let left = Quantity(self.get(name).0.saturating_sub(quantity.0));
            self.set(name, left);
        }
    }

    /// Puts `demand` back, never beyond `total`.
    pub fn release(&mut self, demand: &ResourceSet, total: &ResourceSet) -> Result<(), ResourceError> {
        for (name, quantity) in demand.iter() {
            let back = self.get(name).0 + quantity.0;
            if back > total.get(name).0 {
                return Err(ResourceError::OverRelease { name: name.to_owned() });
            }
        }
        for (name, quantity) in demand.iter() {
            let back = Quantity(self.get(name).0 + quantity.0);
            self.set(name, back);
        }
        Ok(())
    }

    /// A set from amounts by name, as the wire carries them (a name given twice counts
    /// twice).
    pub fn from_amounts(amounts: &[(String, f64)]) -> Result<ResourceSet, ResourceError> {
        let mut set = ResourceSet::new();
        for (name, amount) in amounts {
            set.add(&ResourceSet::new().with(name, Quantity::from_f64(name, *amount)?));
        }
        Ok(set)
    }

    /// Adds `more` (new capacity: a committed bundle's resources).
    pub fn add(&mut self, more: &ResourceSet) {
        for (name, quantity) in more.iter() {
            let sum = Quantity(self.get(name).0.saturating_add(quantity.0));
            self.set(name, sum);
        }
    }

    /// Whether any resource named here satisfies `test`.
    pub fn any_named(&self, mut test: impl FnMut(&str) -> bool) -> bool {
        self.amounts.iter().any(|(name, _)| test(name.as_str()))
    }

    /// Whether no resource is named.
    pub fn is_empty(&self) -> bool {
        self.amounts.is_empty()
    }
}

/// A node's resources: what it has and what is free now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeResources {
    /// Capacity.
    pub total: ResourceSet,
    /// Free now.
    pub available: ResourceSet,
}

impl NodeResources {
    /// An idle node with `total`.
    pub fn idle(total: ResourceSet) -> Self {
        NodeResources { available: total.clone(), total }
    }

    /// The utilisation of the node's most used resource, from 0 (idle) to 1 (full): the
    /// "critical resource utilisation" Ray's hybrid policy scores nodes by.
    pub fn utilization(&self) -> f64 {
        self.available
            .matched(&self.total)
            .map(|(total, free)| 1.0 - free.as_f64() / total.as_f64())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fractions_add_up_exactly() {
        let gpu = Quantity::from_f64(GPU, 0.1).unwrap();
        let mut available = ResourceSet::new().with(GPU, Quantity::units(1));
        let total = available.clone();
        let tenth = ResourceSet::new().with(GPU, gpu);
        for _ in 0..10 {
            assert!(available.try_acquire(&tenth));
        }
        assert!(!available.try_acquire(&tenth));
        assert_eq!(available.get(GPU), Quantity::ZERO);
        for _ in 0..10 {
            available.release(&tenth, &total).unwrap();
        }
        assert_eq!(available, total);
        assert!(matches!(available.release(&tenth, &total), Err(ResourceError::OverRelease { .. })));
    }

    #[test]
    fn bad_quantities_are_refused() {
        assert!(Quantity::from_f64(CPU, -1.0).is_err());
        assert!(Quantity::from_f64(CPU, f64::NAN).is_err());
        assert!(Quantity::from_f64(CPU, f64::INFINITY).is_err());
        assert!(Quantity::from_f64(CPU, 1e300).is_err());
        assert_eq!(Quantity::from_f64(CPU, 2.0).unwrap(), Quantity::units(2));
    }

    proptest! {
        /// Acquiring and releasing in any order never creates or loses resources.
        #[test]
        fn acquire_release_conserves(demands in proptest::collection::vec((0u64..40_000, 0u64..20_000), 1..40)) {
            let total = ResourceSet::new().with(CPU, Quantity::units(8)).with(GPU, Quantity::units(2));
            let mut available = total.clone();
            let mut held = Vec::new();
            for (cpu, gpu) in demands {
                let demand = ResourceSet::new().with(CPU, Quantity(cpu)).with(GPU, Quantity(gpu));
                let fits = available.contains(&demand);
                prop_assert_eq!(available.try_acquire(&demand), fits);
                if fits {
                    held.push(demand);
                }
                prop_assert!(total.contains(&available));
            }
            for demand in held {
                available.release(&demand, &total).unwrap();
            }
            prop_assert_eq!(available, total);
        }
    }
}
