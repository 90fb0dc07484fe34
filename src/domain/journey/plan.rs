//! A journey checked and compiled: which step follows which, on what and
//! how long after, and each step's template or text ready to freeze per
//! contact.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::spec::*;
use crate::domain::contact::{ContactKey, ContactValues};
use crate::domain::problem::SpecProblem;
use crate::domain::template::{CompiledTemplate, Expr, FrozenParams, TemplateSpec};

/// An edge of the journey as every contact's row carries it: the step
/// `to` starts when the contact's current step meets `on`, `delay_secs`
/// later. Rows carry the edges of their current step, so deciding the next
/// step needs no spec (and a spec edited mid-journey does not move
/// contacts already waiting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub on: On,
    #[serde(default)]
    pub delay_secs: u64,
    pub to: String,
}

/// One step, compiled.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    pub id: String,
    pub channel: Channel,
    /// What the step sends.
    pub content: StepContent,
    /// The steps that may follow it.
    pub edges: Vec<Edge>,
}

/// What one step sends, ready to freeze for a contact.
#[derive(Debug, Clone)]
pub enum StepContent {
    /// A WhatsApp template. The first step's lives in the spec's
    /// `template` (compiled with the spec), so it is `Primary` here.
    Template(Box<CompiledTemplate>),
    Primary,
    /// An SMS text.
    Text(Expr),
}

/// What a later step sends to one contact, frozen at staging like the
/// primary's parameters: what is sent does not depend on when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrozenStep {
    /// Parameters of the step's WhatsApp template.
    Template(FrozenParams),
    /// The SMS text.
    Text(String),
    /// The contact lacks what the step needs: the step is skipped with
    /// this exclusion reason and the journey goes on.
    Skip(String),
}

/// A later step's frozen content in a contact's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepParams {
    pub step: String,
    pub content: FrozenStep,
}

/// A journey, checked.
#[derive(Debug, Clone)]
pub struct Journey {
    pub steps: Vec<PlannedStep>,
}

impl Journey {
    /// The journey of a spec without `steps`: its template, once.
    pub fn single() -> Journey {
        Journey {
            steps: vec![PlannedStep {
                id: PRIMARY_STEP.to_string(),
                channel: Channel::Whatsapp,
                content: StepContent::Primary,
                edges: Vec::new(),
            }],
        }
    }

    /// Checks `steps` (the first of which is the primary message, its
    /// template compiled with the spec) and reports every problem at once.
    pub fn plan(steps: &[StepSpec]) -> Result<Journey, Vec<SpecProblem>> {
        if steps.is_empty() {
            return Ok(Journey::single());
        }
        let mut problems = Vec::new();
        if steps.len() > MAX_STEPS {
            problems.push(SpecProblem::new(
                "steps",
                format!(
                    "has {} steps; a journey has at most {MAX_STEPS}, the primary message included",
                    steps.len()
                ),
            ));
        }
        check_ids(steps, &mut problems);
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .rev()
            .collect();
        let mut planned = Vec::with_capacity(steps.len());
        let mut parents: Vec<Option<usize>> = vec![None; steps.len()];
        for (i, step) in steps.iter().enumerate() {
            let content = check_content(i, step, &mut problems);
            parents[i] = check_when(i, step, steps, &index, &mut problems);
            planned.push(PlannedStep {
                id: step.id.clone(),
                channel: step.channel,
                content: content.unwrap_or(StepContent::Primary),
                edges: Vec::new(),
            });
        }
        check_cycles(steps, &parents, &mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        for (i, step) in steps.iter().enumerate() {
            if let (Some(parent), Some(when)) = (parents[i], &step.when) {
                let delay_secs = when
                    .delay
                    .as_deref()
                    .map(parse_delay)
                    .transpose()
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                planned[parent].edges.push(Edge {
                    on: when.on,
                    delay_secs,
                    to: step.id.clone(),
                });
            }
        }
        Ok(Journey { steps: planned })
    }

    /// True for a journey of more than its primary message.
    pub fn has_steps(&self) -> bool {
        self.steps.len() > 1
    }

    /// The step with this id; an empty id is the first step.
    pub fn step(&self, id: &str) -> Option<&PlannedStep> {
        if id.is_empty() {
            return self.steps.first();
        }
        self.steps.iter().find(|s| s.id == id)
    }

    /// The id of the first step.
    pub fn first_id(&self) -> &str {
        self.steps.first().map_or(PRIMARY_STEP, |s| s.id.as_str())
    }

    /// The channel of a step ("" is the first); WhatsApp for an id the
    /// journey does not have.
    pub fn channel(&self, id: &str) -> Channel {
        self.step(id).map_or(Channel::Whatsapp, |s| s.channel)
    }

    /// The id a row's step is shown by: its own, or the first step's for
    /// `""` (rows at the first step carry no id).
    pub fn name<'a>(&'a self, step: &'a str) -> &'a str {
        if step.is_empty() {
            self.first_id()
        } else {
            step
        }
    }

    /// Every step in the spec's order as (the id rows carry, its id):
    /// rows at the first step carry `""`.
    pub fn row_steps(&self) -> impl Iterator<Item = (&str, &str)> {
        self.steps.iter().enumerate().map(|(i, s)| {
            let id = s.id.as_str();
            (if i == 0 { "" } else { id }, id)
        })
    }

    /// The step a step follows and the edge that starts it (none for the
    /// first or an unknown id).
    pub fn entry(&self, id: &str) -> Option<(&str, &Edge)> {
        if id.is_empty() {
            return None;
        }
        self.steps.iter().find_map(|s| {
            s.edges
                .iter()
                .find(|e| e.to == id)
                .map(|e| (s.id.as_str(), e))
        })
    }

    /// The condition that starts a step (none for the first or an unknown
    /// id).
    pub fn entered_on(&self, id: &str) -> Option<On> {
        self.entry(id).map(|(_, e)| e.on)
    }

    /// How a step starts, as reports print it: `on failed of primary`,
    /// `3d after no_reply to primary`… (none for the first step).
    pub fn when_text(&self, id: &str) -> Option<String> {
        let (from, edge) = self.entry(id)?;
        let on = edge.on.as_str();
        Some(match edge.delay_secs {
            0 => format!("on {on} of {from}"),
            d => format!("{} after {on} of {from}", delay_text(d)),
        })
    }

    /// The edges leaving a step (none for an unknown id).
    pub fn edges(&self, id: &str) -> Vec<Edge> {
        self.step(id).map(|s| s.edges.clone()).unwrap_or_default()
    }

    /// Freezes every later step for one contact, as staging stores them
    /// (the primary's template is frozen with the spec's, not here).
    pub fn freeze_later(&self, record: ContactValues<'_>, contact: &ContactKey) -> Vec<StepParams> {
        let skip = |missing: String| FrozenStep::Skip(format!("missing_variable:{missing}"));
        self.steps
            .iter()
            .filter_map(|step| {
                let content = match &step.content {
                    StepContent::Primary => return None,
                    StepContent::Template(t) => t
                        .freeze(record, contact)
                        .map_or_else(|m| skip(m.0), FrozenStep::Template),
                    StepContent::Text(expr) => expr
                        .render(record, contact)
                        .map_or_else(|m| skip(m.0), FrozenStep::Text),
                };
                Some(StepParams {
                    step: step.id.clone(),
                    content,
                })
            })
            .collect()
    }
}

/// A delay in the units specs write it in (`3d`, `1d12h`, `20s`).
pub fn delay_text(secs: u64) -> String {
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

fn check_ids(steps: &[StepSpec], problems: &mut Vec<SpecProblem>) {
    for (i, step) in steps.iter().enumerate() {
        let field = format!("steps[{i}].id");
        if step.id.is_empty() {
            problems.push(SpecProblem::new(field, "is missing"));
        } else if !is_step_id(&step.id) {
            problems.push(SpecProblem::new(
                field,
                format!(
                    "\"{}\" may contain only a-z, 0-9, '_' and '-', at most {MAX_STEP_ID_LEN} characters",
                    step.id
                ),
            ));
        } else if let Some(j) = steps[..i].iter().position(|s| s.id == step.id) {
            problems.push(SpecProblem::new(
                field,
                format!("\"{}\" is the id of steps[{j}] already", step.id),
            ));
        }
    }
}

/// The step's content, compiled; `None` when it has problems (pushed).
fn check_content(
    i: usize,
    step: &StepSpec,
    problems: &mut Vec<SpecProblem>,
) -> Option<StepContent> {
    let at = |f: &str| format!("steps[{i}].{f}");
    match step.channel {
        Channel::Whatsapp => {
            if step.text.is_some() {
                problems.push(SpecProblem::new(
                    at("text"),
                    "is for sms steps; a whatsapp step sends its template",
                ));
            }
            if i == 0 {
                // Compiled with the spec, as its `template`.
                return Some(StepContent::Primary);
            }
            let Some(template) = &step.template else {
                problems.push(SpecProblem::new(
                    at("template"),
                    "is missing (a whatsapp step sends a template)",
                ));
                return None;
            };
            compile_step_template(i, template, problems)
        }
        Channel::Sms => {
            if i == 0 {
                problems.push(SpecProblem::new(
                    at("channel"),
                    "the first step is the primary message, a WhatsApp template; an sms step can follow it",
                ));
            }
            if step.template.is_some() {
                problems.push(SpecProblem::new(
                    at("template"),
                    "is for whatsapp steps; an sms step sends its text",
                ));
            }
            let Some(text) = step.text.as_deref().filter(|t| !t.trim().is_empty()) else {
                problems.push(SpecProblem::new(
                    at("text"),
                    "is missing (an sms step sends a text)",
                ));
                return None;
            };
            match Expr::parse(text) {
                Ok(expr) => Some(StepContent::Text(expr)),
                Err(e) => {
                    problems.push(SpecProblem::new(at("text"), e.to_string()));
                    None
                }
            }
        }
    }
}

fn compile_step_template(
    i: usize,
    template: &TemplateSpec,
    problems: &mut Vec<SpecProblem>,
) -> Option<StepContent> {
    match template.compile() {
        Ok(compiled) => Some(StepContent::Template(Box::new(compiled))),
        Err(found) => {
            // Template problems name `template.…`: say which step's.
            problems.extend(found.into_iter().map(|p| SpecProblem {
                field: format!("steps[{i}].{}", p.field),
                message: p.message,
            }));
            None
        }
    }
}

/// Checks `when` and answers the index of the step it follows.
fn check_when(
    i: usize,
    step: &StepSpec,
    steps: &[StepSpec],
    index: &HashMap<&str, usize>,
    problems: &mut Vec<SpecProblem>,
) -> Option<usize> {
    let at = |f: &str| format!("steps[{i}].{f}");
    let Some(when) = &step.when else {
        if i > 0 {
            problems.push(SpecProblem::new(
                at("when"),
                "is missing: a later step says which step it follows, on what and after how long ({\"after\": \"primary\", \"on\": \"no_reply\", \"delay\": \"3d\"})",
            ));
        }
        return None;
    };
    if i == 0 {
        problems.push(SpecProblem::new(
            at("when"),
            "the first step is the primary message and starts at the contact's turn; remove its when",
        ));
        return None;
    }
    check_delay(&at("when.delay"), when, problems);
    let known = || {
        steps
            .iter()
            .map(|s| s.id.as_str())
            .filter(|id| !id.is_empty())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(&parent) = index
        .get(when.after.as_str())
        .filter(|_| !when.after.is_empty())
    else {
        problems.push(SpecProblem::new(
            at("when.after"),
            if when.after.is_empty() {
                format!(
                    "is missing: the id of the step this one follows (one of {})",
                    known()
                )
            } else {
                format!(
                    "\"{}\" is not the id of a step (known: {})",
                    when.after,
                    known()
                )
            },
        ));
        return None;
    };
    if parent == i {
        problems.push(SpecProblem::new(
            at("when.after"),
            "a step cannot follow itself",
        ));
        return None;
    }
    let twin = steps[..i].iter().position(|s| {
        s.when
            .as_ref()
            .is_some_and(|w| w.after == when.after && w.on == when.on)
    });
    if let Some(j) = twin {
        problems.push(SpecProblem::new(
            at("when"),
            format!(
                "steps[{j}] starts after {} on {} already; one step per condition",
                when.after,
                when.on.as_str()
            ),
        ));
    }
    Some(parent)
}

fn check_delay(field: &str, when: &When, problems: &mut Vec<SpecProblem>) {
    match when.delay.as_deref().map(parse_delay) {
        Some(Err(message)) => problems.push(SpecProblem::new(field, message)),
        Some(Ok(secs)) if secs > MAX_DELAY_SECS => problems.push(SpecProblem::new(
            field,
            format!(
                "\"{}\" is longer than 90 days",
                when.delay.as_deref().unwrap_or_default()
            ),
        )),
        Some(Ok(0)) | None if when.on == On::NoReply => problems.push(SpecProblem::new(
            field,
            "no_reply needs a delay: how long to wait for a reply (like \"3d\")",
        )),
        _ => {}
    }
}

/// Every step must lead back to the first: following `after` from any step
/// never comes back to it.
fn check_cycles(steps: &[StepSpec], parents: &[Option<usize>], problems: &mut Vec<SpecProblem>) {
    let mut reported = vec![false; steps.len()];
    for start in 1..steps.len() {
        let mut path = vec![start];
        let mut at = start;
        while let Some(parent) = parents[at] {
            if let Some(pos) = path.iter().position(|&p| p == parent) {
                let cycle = &path[pos..];
                if !cycle.iter().any(|&c| reported[c]) {
                    // In `after` order: each step follows the next one.
                    let names: Vec<&str> = cycle
                        .iter()
                        .chain(std::iter::once(&parent))
                        .map(|&c| steps[c].id.as_str())
                        .collect();
                    problems.push(SpecProblem::new(
                        format!("steps[{parent}].when.after"),
                        format!(
                            "the steps {} form a cycle; every step must lead back to the first",
                            names.join(" → ")
                        ),
                    ));
                    for &c in cycle {
                        reported[c] = true;
                    }
                }
                break;
            }
            path.push(parent);
            at = parent;
        }
    }
}
