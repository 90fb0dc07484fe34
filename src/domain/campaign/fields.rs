//! Fields a campaign spec does not have: each one named with its path and
//! the nearest known name, so a misspelt field is never silently ignored.

use super::*;

/// The keys each object of a spec may have, by path (`[]` for array items).
/// The template body is left out: its named parameters are free keys.
const SPEC_KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "id",
            "name",
            "kind",
            "test_recipients",
            "audience",
            "state",
            "senders",
            "template",
            "schedule",
            "pacing",
            "exclusive",
            "reply_routing",
            "tags",
            "steps",
            "trigger",
            "goal",
        ],
    ),
    ("goal", &["name", "window", "stops_journey"]),
    (
        "audience",
        &["tags_any", "tags_all", "tags_none", "require_tags"],
    ),
    (
        "trigger",
        &["delay", "cancel_on", "max_per_contact", "dedupe_window"],
    ),
    ("trigger.max_per_contact", &["count", "per"]),
    ("steps[]", &["id", "channel", "template", "text", "when"]),
    ("steps[].when", &["after", "on", "delay"]),
    (
        "schedule",
        &["start_at", "end_at", "timezone", "quiet_hours"],
    ),
    ("schedule.quiet_hours", &["from", "to"]),
    ("pacing", &["per_second", "per_hour"]),
    ("reply_routing", &["agent"]),
    (
        "template",
        &[
            "name",
            "language",
            "category",
            "parameter_format",
            "body",
            "header",
            "buttons",
        ],
    ),
    (
        "template.header",
        &["type", "media_id", "link", "filename", "text_params"],
    ),
    ("template.buttons[]", &["sub_type", "index", "params"]),
];

/// Every field of `spec` that the format does not have, with the nearest
/// known name when one is close.
pub fn unknown_fields(spec: &serde_json::Value) -> Vec<SpecProblem> {
    let mut problems = Vec::new();
    for (path, allowed) in SPEC_KEYS {
        let objects: Vec<(String, &serde_json::Value)> = match path.split_once("[]") {
            Some((list, inner)) => lookup(spec, list)
                .and_then(|v| v.as_array())
                .map(|a| {
                    let inner = inner.trim_start_matches('.');
                    a.iter()
                        .enumerate()
                        .filter_map(|(i, v)| {
                            let at = format!("{list}[{i}]");
                            if inner.is_empty() {
                                return Some((at, v));
                            }
                            lookup(v, inner).map(|v| (format!("{at}.{inner}"), v))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            None => lookup(spec, path)
                .map(|v| vec![(path.to_string(), v)])
                .unwrap_or_default(),
        };
        for (at, value) in objects {
            let Some(map) = value.as_object() else {
                continue;
            };
            for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
                let field = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                let hint = nearest(key, allowed)
                    .map(|n| format!(" (did you mean {n}?)"))
                    .unwrap_or_default();
                problems.push(SpecProblem::new(
                    field,
                    format!(
                        "is not a campaign spec field{hint}; known here: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    }
    problems
}

fn lookup<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    if path.is_empty() {
        return Some(v);
    }
    path.split('.').try_fold(v, |v, part| v.get(part))
}

/// A known key that `key` is a prefix of, or one edit away from.
fn nearest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .find(|a| a.starts_with(key) || key.starts_with(*a))
        .or_else(|| allowed.iter().find(|a| edit_distance(key, a) <= 2))
        .copied()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
