//! The actix glue: `CampaignActor` runs the pump as a task and takes
//! control messages (spec, override, stop) from the registry.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::prelude::*;

use crate::ingest::catalog::CatalogEntry;
use crate::sync::{MutexExt, RwLockExt};

use super::*;

pub struct CampaignActor {
    pub pump: Arc<Pump>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl CampaignActor {
    pub fn new(pump: Pump) -> Self {
        CampaignActor {
            pump: Arc::new(pump),
            task: None,
        }
    }
}

impl Actor for CampaignActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        use tracing::Instrument;
        let span = tracing::info_span!("campaign", campaign = %self.pump.state.id);
        self.task = Some(tokio::spawn(self.pump.clone().run().instrument(span)));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.pump.state.stop.store(true, Ordering::Release);
    }
}

/// Operator and spec changes.
#[derive(Message)]
#[rtype(result = "()")]
pub enum CampaignControl {
    Spec(Arc<CatalogEntry>),
    Override {
        per_second: Option<f64>,
        paused: bool,
    },
    Stop,
}

impl Handler<CampaignControl> for CampaignActor {
    type Result = ();

    fn handle(&mut self, msg: CampaignControl, ctx: &mut Self::Context) {
        let state = &self.pump.state;
        match msg {
            CampaignControl::Spec(entry) => {
                // A changed spec (a fixed template) lifts a halt; the same
                // spec read again (a restart, a catalog refresh) does not.
                let lifted = {
                    let mut halted = state.halted.lock_or_recover();
                    let changed = halted
                        .as_ref()
                        .is_some_and(|h| h.spec != entry.spec.halt_digest());
                    if changed {
                        *halted = None;
                    }
                    changed
                };
                *state.entry.write_or_recover() = entry;
                if lifted {
                    tracing::info!(campaign = %state.id, "a changed spec lifts the campaign's halt");
                    let (store, live) = (self.pump.store.clone(), state.clone());
                    tokio::spawn(async move {
                        let id = &live.id;
                        if let Err(e) = store.set_campaign_halt(id, None).await {
                            tracing::warn!(campaign = %id, error = %e, "cannot lift the stored halt; the next start lifts it again");
                        }
                        // A halt of the new spec may have come in meanwhile:
                        // the check writes it again rather than lift it.
                        if live.halted.lock_or_recover().is_some() {
                            live.halt_unsaved.store(true, Ordering::Release);
                        }
                    });
                }
                state.repace();
            }
            CampaignControl::Override { per_second, paused } => {
                *state.rate_override.write_or_recover() = per_second;
                state.paused_by_operator.store(paused, Ordering::Release);
                state.repace();
            }
            CampaignControl::Stop => {
                state.stop.store(true, Ordering::Release);
                ctx.stop();
            }
        }
    }
}
