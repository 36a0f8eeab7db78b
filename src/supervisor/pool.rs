//! Admission to the pool of loaded models: which idle engines must stop so that a new one fits.
//!
//! Pure planning over a snapshot, so the policy is tested without processes: least recently used
//! idle engines go first; an engine that is serving or has requests waiting is never chosen; the
//! answer is either the list to stop or a refusal that says why, in the user's terms.

use std::time::Instant;

use crate::domain::mib;

/// One loaded model, as the planner sees it.
#[derive(Debug, Clone)]
pub struct Resident {
    /// The model's name.
    pub model: String,
    /// When it was last used (for least-recently-used eviction).
    pub last_used: Instant,
    /// Requests running or waiting on it.
    pub busy: bool,
    /// Memory it was estimated to need when loaded, in bytes.
    pub estimate: u64,
}

/// Why a model cannot be loaded even after stopping every idle engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `supervisor.max_models` engines are loaded and every one is serving.
    #[error("cannot load {model}: {max} models are loaded already and all are serving ({serving}); wait for one to finish, or raise supervisor.max_models")]
    PoolFull {
        /// The model that was to load.
        model: String,
        /// `supervisor.max_models`.
        max: u32,
        /// The models serving, comma-separated.
        serving: String,
    },
    /// The model alone needs more than `supervisor.memory_budget_mib` allows.
    #[error("cannot load {model}: it needs about {}, more than the memory budget of {} (supervisor.memory_budget_mib) even with every idle model unloaded; raise the budget, lower the context, or use a smaller model", mib(*.needed), mib(*.budget))]
    OverBudget {
        /// The model that was to load.
        model: String,
        /// Its estimated need, in bytes.
        needed: u64,
        /// The memory budget, in bytes.
        budget: u64,
    },
    /// The machine's free memory, with every idle engine stopped, is less than the model needs.
    #[error("cannot load {model}: it needs about {} but only {} of memory is free even with every idle model unloaded; free memory, lower the context, or use a smaller model", mib(*.needed), mib(*.available))]
    NotEnoughMemory {
        /// The model that was to load.
        model: String,
        /// Its estimated need, in bytes.
        needed: u64,
        /// Memory free now plus what stopping the idle engines would free, in bytes.
        available: u64,
    },
}

/// The limits the pool must stay within.
pub struct Limits {
    /// Models loaded at once, at most (`supervisor.max_models`; 0 counts as 1).
    pub max_models: u32,
    /// Bytes, if a budget is set.
    pub budget: Option<u64>,
    /// Bytes the machine has free now, if known.
    pub available: Option<u64>,
}

/// The engines to stop, oldest use first, so that `model` (needing `needed` bytes) can load.
pub fn plan(
    model: &str,
    needed: u64,
    residents: &[Resident],
    limits: &Limits,
) -> Result<Vec<String>, Refusal> {
    let mut idle: Vec<&Resident> = residents.iter().filter(|r| !r.busy).collect();
    idle.sort_by_key(|r| r.last_used);
    let mut count = residents.len() as u64;
    let mut used: u64 = residents.iter().map(|r| r.estimate).sum();
    let mut freed: u64 = 0;
    let mut evict = Vec::new();
    let fits = |count: u64, used: u64, freed: u64| {
        count < limits.max_models.max(1) as u64
            && limits.budget.is_none_or(|b| used + needed <= b)
            && limits.available.is_none_or(|a| needed <= a + freed)
    };
    let mut candidates = idle.into_iter();
    while !fits(count, used, freed) {
        let Some(victim) = candidates.next() else {
            return Err(refusal(model, needed, residents, limits, used, freed));
        };
        count -= 1;
        used -= victim.estimate;
        freed += victim.estimate;
        evict.push(victim.model.clone());
    }
    Ok(evict)
}

fn refusal(
    model: &str,
    needed: u64,
    residents: &[Resident],
    limits: &Limits,
    used: u64,
    freed: u64,
) -> Refusal {
    let model = model.to_string();
    if let Some(budget) = limits.budget.filter(|b| used + needed > *b) {
        return Refusal::OverBudget {
            model,
            needed,
            budget,
        };
    }
    if let Some(available) = limits.available.filter(|a| needed > a + freed) {
        return Refusal::NotEnoughMemory {
            model,
            needed,
            available: available + freed,
        };
    }
    let serving = residents
        .iter()
        .filter(|r| r.busy)
        .map(|r| r.model.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Refusal::PoolFull {
        model,
        max: limits.max_models,
        serving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn resident(model: &str, age_secs: u64, busy: bool, mib_: u64) -> Resident {
        Resident {
            model: model.into(),
            last_used: Instant::now() - Duration::from_secs(age_secs),
            busy,
            estimate: mib_ * MIB,
        }
    }

    fn limits(max: u32, budget_mib: Option<u64>, available_mib: Option<u64>) -> Limits {
        Limits {
            max_models: max,
            budget: budget_mib.map(|b| b * MIB),
            available: available_mib.map(|a| a * MIB),
        }
    }

    #[test]
    fn room_means_nothing_is_stopped() {
        let r = [resident("a", 10, false, 300)];
        assert_eq!(
            plan("b", 300 * MIB, &r, &limits(3, None, Some(4000))).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn least_recently_used_idle_goes_first_and_busy_never() {
        let r = [
            resident("old-busy", 100, true, 300),
            resident("old", 50, false, 300),
            resident("new", 5, false, 300),
        ];
        assert_eq!(
            plan("x", 300 * MIB, &r, &limits(3, None, None)).unwrap(),
            vec!["old".to_string()]
        );
        assert_eq!(
            plan("x", 300 * MIB, &r, &limits(2, None, None)).unwrap(),
            vec!["old".to_string(), "new".to_string()]
        );
    }

    #[test]
    fn all_serving_is_a_refusal_naming_them() {
        let r = [resident("a", 1, true, 300), resident("b", 1, true, 300)];
        let err = plan("c", 300 * MIB, &r, &limits(2, None, None)).unwrap_err();
        assert!(matches!(err, Refusal::PoolFull { .. }));
        assert!(
            err.to_string().contains("a, b") && err.to_string().contains("max_models"),
            "{err}"
        );
    }

    #[test]
    fn budget_evicts_then_refuses_what_cannot_fit() {
        let r = [resident("a", 30, false, 300), resident("b", 20, false, 300)];
        assert_eq!(
            plan("c", 300 * MIB, &r, &limits(5, Some(700), None)).unwrap(),
            vec!["a".to_string()]
        );
        let err = plan("huge", 900 * MIB, &r, &limits(5, Some(700), None)).unwrap_err();
        assert_eq!(
            err,
            Refusal::OverBudget {
                model: "huge".into(),
                needed: 900 * MIB,
                budget: 700 * MIB
            }
        );
        assert!(
            err.to_string().contains("memory budget of 700 MiB"),
            "{err}"
        );
    }

    #[test]
    fn free_memory_counts_what_evictions_release() {
        let r = [resident("a", 30, false, 300)];
        assert_eq!(
            plan("b", 400 * MIB, &r, &limits(5, None, Some(200))).unwrap(),
            vec!["a".to_string()]
        );
        let err = plan("b", 600 * MIB, &r, &limits(5, None, Some(200))).unwrap_err();
        assert!(matches!(err, Refusal::NotEnoughMemory { .. }), "{err}");
        assert!(err.to_string().contains("500 MiB"), "{err}");
    }
}
