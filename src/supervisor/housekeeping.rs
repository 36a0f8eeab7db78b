//! Background work of the supervisor: stopping engines idle past the TTL. Ends with the
//! supervisor (or its shutdown).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lifecycle::StopReason;
use super::slot::{alive, ModelSlot};
use super::{lock, Inner};

/// Ticks until the supervisor is gone or shut down.
pub(super) async fn run(inner: Weak<Inner>, shutdown: CancellationToken) {
    let tick = match inner.upgrade().map(|i| i.config.supervisor.idle_ttl_secs) {
        // A short TTL (tests) is checked often enough to be honoured closely.
        Some(ttl) if ttl > 0 && ttl < 4 => Duration::from_millis(250),
        _ => Duration::from_secs(1),
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.expire_idle().await;
    }
}

impl Inner {
    /// Stops engines idle past the TTL.
    async fn expire_idle(&self) {
        let ttl = self.config.supervisor.idle_ttl_secs;
        if ttl == 0 {
            return;
        }
        let limit = Duration::from_secs(ttl);
        let idle_too_long = |slot: &ModelSlot| {
            let st = slot.state();
            alive(st.lifecycle.state()).is_some()
                && st.active + st.queued == 0
                && st.last_used.elapsed() >= limit
        };
        let slots: Vec<Arc<ModelSlot>> = lock(&self.models).values().cloned().collect();
        for slot in slots {
            if !idle_too_long(&slot) {
                continue;
            }
            // Never block housekeeping behind a load; check again under the lock.
            let Ok(_guard) = slot.load_lock.try_lock() else {
                continue;
            };
            if idle_too_long(&slot) {
                self.stop_engine_locked(&slot, StopReason::Idle { ttl_secs: ttl })
                    .await;
            }
        }
    }
}
