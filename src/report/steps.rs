//! The funnel of every journey step: how many contacts each step reached,
//! how far its message got, who skipped it and who still waits for it
//! (docs/ARCHITECTURE.md, "Journeys").

use serde::Serialize;

use super::{percent_text, ratio, CampaignSummary, Ratios, StepTally, FUNNEL};
use crate::domain::{Channel, Journey, PRIMARY_STEP};

/// One funnel stage: contacts that reached it and the conversion from the
/// stage before (`percent`, one decimal; absent when the base is 0).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub stage: &'static str,
    pub contacts: u64,
    pub percent: Option<f64>,
}

/// The funnel from a base (`staged` for a campaign, `entered` for a step)
/// through accepted, sent, delivered, read and replied.
pub fn stages(base: &'static str, contacts: u64, tally: &StepTally) -> Vec<Stage> {
    let mut out = vec![Stage {
        stage: base,
        contacts,
        percent: None,
    }];
    let mut previous = contacts;
    for stage in FUNNEL {
        let n = tally.reached(stage);
        out.push(Stage {
            stage: stage.as_str(),
            contacts: n,
            percent: ratio(n, previous),
        });
        previous = n;
    }
    out
}

/// One step of a campaign's journey as reports show it.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    /// The step's id in the spec.
    pub step: String,
    pub channel: &'static str,
    /// How it starts (`on failed of primary`, `3d after no_reply of
    /// primary`); none for the first step.
    pub when: Option<String>,
    /// Contacts that reached the step, in any state (a skip included).
    pub entered: u64,
    /// Contacts whose timer for this step is set: they reach it when it
    /// falls due, unless a reply or the end of the campaign comes first.
    pub waiting: u64,
    pub funnel: Vec<Stage>,
    #[serde(flatten)]
    pub ratios: Ratios,
    #[serde(flatten)]
    pub tally: StepTally,
}

impl CampaignSummary {
    /// Every step, in the journey's order: steps nobody reached yet show
    /// zeros, and steps of an earlier spec that rows still name come last.
    /// Without a journey (the spec is gone) the first step is `primary`.
    pub fn steps_view(&self, journey: Option<&Journey>) -> Vec<StepView> {
        let mut ids: Vec<String> = match journey {
            Some(j) => j.row_steps().map(|(raw, _)| raw.to_string()).collect(),
            None => vec![String::new()],
        };
        for id in self.steps.keys().chain(self.timers.keys()) {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids.iter()
            .map(|raw| {
                let tally = self.steps.get(raw).cloned().unwrap_or_default();
                let entered = tally.total();
                let step = match journey {
                    Some(j) => j.name(raw).to_string(),
                    None if raw.is_empty() => PRIMARY_STEP.to_string(),
                    None => raw.clone(),
                };
                let channel = journey.map_or(Channel::Whatsapp, |j| j.channel(raw));
                let mut ratios = tally.ratios();
                if channel == Channel::Sms {
                    // SMS has no read receipts and its replies do not come
                    // back here: a percentage of 0 would be a figure never
                    // measured.
                    (ratios.read_by, ratios.replied_by) = (None, None);
                }
                StepView {
                    channel: channel.as_str(),
                    when: journey.and_then(|j| j.when_text(raw)),
                    waiting: self.timers.get(&step).copied().unwrap_or(0),
                    funnel: stages("entered", entered, &tally),
                    ratios,
                    entered,
                    step,
                    tally,
                }
            })
            .collect()
    }
}

/// The journey's steps as `report --summary` (and the demo) prints them.
pub fn render(steps: &[StepView]) -> String {
    let mut out = String::from("journey, step by step\n");
    for v in steps {
        let starts = v.when.as_deref().unwrap_or("first message");
        out.push_str(&format!("  step {} ({}, {starts})\n", v.step, v.channel));
        let mut line = |label: &str, value: String, note: String| {
            out.push_str(&format!("    {label:<26}{value:>10}  {note}\n"))
        };
        let reached = |stage: usize| v.funnel[stage].contacts.to_string();
        line("entered", v.entered.to_string(), String::new());
        line("accepted", reached(1), String::new());
        line("sent", reached(2), String::new());
        let pct = percent_text;
        line(
            "delivered",
            reached(3),
            format!("received by {}", pct(v.ratios.received_by)),
        );
        line(
            "read",
            reached(4),
            format!("read by {}", pct(v.ratios.read_by)),
        );
        line(
            "replied",
            reached(5),
            format!("replied by {}", pct(v.ratios.replied_by)),
        );
        let failed = v.tally.count(crate::domain::DispatchState::Failed);
        line("failed", failed.to_string(), String::new());
        for (class, n) in &v.tally.failed_by_class {
            line(&format!("  {class}"), n.to_string(), String::new());
        }
        line("skipped", v.tally.excluded().to_string(), String::new());
        for (reason, n) in &v.tally.excluded_by_reason {
            line(&format!("  {reason}"), n.to_string(), String::new());
        }
        if v.when.is_some() {
            line("waiting for it", v.waiting.to_string(), String::new());
        }
    }
    out
}
