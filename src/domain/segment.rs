//! Segments: which contacts of an audience a campaign takes, by their tags,
//! and the valued tags a template may read (docs/ARCHITECTURE.md,
//! "Segments").

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::problem::SpecProblem;

/// An audience record's tags: labels (`vip`) and valued tags
/// (`customer_id` = `C-1`). A valued tag also counts as a tag of its name
/// for a segment.
///
/// In JSON, an array of labels in which an object adds valued tags
/// (`["vip", {"customer_id": "C-1"}]`), or one object whose `true` or
/// `null` values are labels (`{"vip": true, "customer_id": "C-1"}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags {
    pub labels: Vec<String>,
    pub values: BTreeMap<String, String>,
}

impl Tags {
    /// Whether the contact has `tag` (a label or a valued tag; case and
    /// surrounding blanks do not matter).
    pub fn has(&self, tag: &str) -> bool {
        let tag = tag.trim();
        self.labels.iter().any(|l| l.eq_ignore_ascii_case(tag))
            || self.values.keys().any(|k| k.eq_ignore_ascii_case(tag))
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.values.is_empty()
    }

    /// As kept with the contact's row and shown in reports: the labels,
    /// then each valued tag as `name=value`.
    pub fn to_row(&self) -> Vec<String> {
        let mut out = self.labels.clone();
        out.extend(self.values.iter().map(|(k, v)| format!("{k}={v}")));
        out
    }

    fn add_label(&mut self, label: &str) {
        let label = label.trim();
        if !label.is_empty() && !self.labels.iter().any(|l| l == label) {
            self.labels.push(label.to_string());
        }
    }

    /// Adds `name` with a scalar JSON value: a string or a number is a
    /// valued tag, `true` or `null` a label, `false` nothing.
    fn add_value<E: de::Error>(&mut self, name: String, value: serde_json::Value) -> Result<(), E> {
        let name = name.trim().to_string();
        if name.is_empty() {
            return Err(E::custom("a tag has an empty name"));
        }
        match value {
            serde_json::Value::String(s) if !s.trim().is_empty() => {
                self.values.insert(name, s.trim().to_string());
            }
            serde_json::Value::Number(n) => {
                self.values.insert(name, n.to_string());
            }
            serde_json::Value::Bool(true) | serde_json::Value::Null => self.add_label(&name),
            serde_json::Value::String(_) | serde_json::Value::Bool(false) => {}
            other => {
                return Err(E::custom(format!(
                    "tag {name:?} has a value that is not text or a number: {other}"
                )))
            }
        }
        Ok(())
    }

    /// Reads the `tags` cell of an imported row: labels and `name=value`
    /// valued tags separated by `;`.
    pub fn from_cell(cell: &str) -> Tags {
        let mut tags = Tags::default();
        for item in cell.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            match item.split_once('=') {
                Some((name, value)) if !name.trim().is_empty() && !value.trim().is_empty() => {
                    tags.values
                        .insert(name.trim().to_string(), value.trim().to_string());
                }
                _ => tags.add_label(item),
            }
        }
        tags
    }
}

impl From<Vec<String>> for Tags {
    fn from(labels: Vec<String>) -> Tags {
        Tags {
            labels,
            values: BTreeMap::new(),
        }
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let extra = usize::from(!self.values.is_empty());
        let mut seq = s.serialize_seq(Some(self.labels.len() + extra))?;
        for l in &self.labels {
            seq.serialize_element(l)?;
        }
        if !self.values.is_empty() {
            seq.serialize_element(&self.values)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tags, D::Error> {
        struct TagsVisitor;
        impl<'de> Visitor<'de> for TagsVisitor {
            type Value = Tags;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an array of tags (text, or objects of valued tags) or an object of tags",
                )
            }

            fn visit_unit<E: de::Error>(self) -> Result<Tags, E> {
                Ok(Tags::default())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tags, A::Error> {
                let mut tags = Tags::default();
                while let Some(item) = seq.next_element::<serde_json::Value>()? {
                    match item {
                        serde_json::Value::String(s) => tags.add_label(&s),
                        serde_json::Value::Number(n) => tags.add_label(&n.to_string()),
                        serde_json::Value::Object(o) => {
                            for (name, value) in o {
                                tags.add_value::<A::Error>(name, value)?;
                            }
                        }
                        serde_json::Value::Null => {}
                        other => {
                            return Err(de::Error::custom(format!(
                                "a tag must be text or an object of valued tags, got {other}"
                            )))
                        }
                    }
                }
                Ok(tags)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tags, A::Error> {
                let mut tags = Tags::default();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    tags.add_value::<A::Error>(name, value)?;
                }
                Ok(tags)
            }
        }
        d.deserialize_any(TagsVisitor)
    }
}

/// A campaign's `audience`: the contacts it takes, by tag. Every filter
/// that is set must hold; an empty one takes every contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// At least one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_any: Vec<String>,
    /// Every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_all: Vec<String>,
    /// None of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_none: Vec<String>,
    /// A contact without any tag is not taken.
    #[serde(default)]
    pub require_tags: bool,
}

impl Segment {
    /// Whether a contact with `tags` belongs to the segment.
    pub fn admits(&self, tags: &Tags) -> bool {
        if self.require_tags && tags.is_empty() {
            return false;
        }
        (self.tags_any.is_empty() || self.tags_any.iter().any(|t| tags.has(t)))
            && self.tags_all.iter().all(|t| tags.has(t))
            && !self.tags_none.iter().any(|t| tags.has(t))
    }

    /// Every problem of the filters: blank tags, and a tag both required
    /// and refused (the segment could take nobody).
    pub fn check(&self) -> Vec<SpecProblem> {
        let mut problems = Vec::new();
        for (field, list) in [
            ("audience.tags_any", &self.tags_any),
            ("audience.tags_all", &self.tags_all),
            ("audience.tags_none", &self.tags_none),
        ] {
            for (i, t) in list.iter().enumerate() {
                if t.trim().is_empty() {
                    problems.push(SpecProblem::new(format!("{field}[{i}]"), "is blank"));
                }
            }
        }
        for t in &self.tags_none {
            let wanted =
                |list: &[String]| list.iter().any(|w| w.trim().eq_ignore_ascii_case(t.trim()));
            if wanted(&self.tags_all) || (self.tags_any.len() == 1 && wanted(&self.tags_any)) {
                problems.push(SpecProblem::new(
                    "audience.tags_none",
                    format!("\"{t}\" is also required, so the segment could take nobody"),
                ));
            }
        }
        problems
    }

    /// The segment in words, for `/campaigns`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.tags_any.is_empty() {
            parts.push(format!("any of {}", self.tags_any.join(", ")));
        }
        if !self.tags_all.is_empty() {
            parts.push(format!("all of {}", self.tags_all.join(", ")));
        }
        if !self.tags_none.is_empty() {
            parts.push(format!("none of {}", self.tags_none.join(", ")));
        }
        if self.require_tags {
            parts.push("tagged contacts only".into());
        }
        if parts.is_empty() {
            "every contact".into()
        } else {
            parts.join("; ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(json: &str) -> Tags {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tags_read_labels_and_valued_tags_in_either_shape() {
        let t = tags(r#"["vip", {"customer_id": "C-1", "score": 7}, " mx "]"#);
        assert_eq!(t.labels, ["vip", "mx"]);
        assert_eq!(t.values.get("customer_id").map(String::as_str), Some("C-1"));
        assert_eq!(t.values.get("score").map(String::as_str), Some("7"));
        assert!(t.has("VIP") && t.has("customer_id") && !t.has("gold"));
        let o = tags(r#"{"vip": true, "customer_id": "C-1", "old": false}"#);
        assert_eq!(o.labels, ["vip"]);
        assert_eq!(o.to_row(), ["vip", "customer_id=C-1"]);
        // What is written reads back the same.
        let back: Tags = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert_eq!(
            serde_json::to_string(&Tags::from(vec!["a".to_string()])).unwrap(),
            r#"["a"]"#
        );
        assert!(serde_json::from_str::<Tags>(r#"[["nested"]]"#).is_err());
        assert!(serde_json::from_str::<Tags>(r#"{"x": {"y": 1}}"#).is_err());
        assert!(serde_json::from_str::<Tags>("null").unwrap().is_empty());
        let cell = Tags::from_cell("vip; customer_id=C-9 ;;mx");
        assert_eq!(cell.labels, ["vip", "mx"]);
        assert_eq!(
            cell.values.get("customer_id").map(String::as_str),
            Some("C-9")
        );
    }

    #[test]
    fn every_filter_holds() {
        let s = Segment {
            tags_any: vec!["mx".into(), "co".into()],
            tags_all: vec!["vip".into()],
            tags_none: vec!["churned".into()],
            require_tags: true,
        };
        assert!(s.admits(&tags(r#"["vip", "mx"]"#)));
        assert!(s.admits(&tags(r#"["VIP", {"co": "bogota"}]"#)));
        assert!(!s.admits(&tags(r#"["vip"]"#)), "none of tags_any");
        assert!(!s.admits(&tags(r#"["mx"]"#)), "not every one of tags_all");
        assert!(
            !s.admits(&tags(r#"["vip", "mx", "churned"]"#)),
            "one of tags_none"
        );
        let tagged = Segment {
            require_tags: true,
            ..Default::default()
        };
        assert!(!tagged.admits(&Tags::default()));
        assert!(tagged.admits(&tags(r#"[{"customer_id": "C-1"}]"#)));
        assert!(Segment::default().admits(&Tags::default()));
        assert_eq!(
            s.describe(),
            "any of mx, co; all of vip; none of churned; tagged contacts only"
        );
    }

    #[test]
    fn filters_that_can_never_match_are_refused() {
        let s = Segment {
            tags_all: vec!["vip".into(), " ".into()],
            tags_none: vec!["VIP".into()],
            ..Default::default()
        };
        let problems: Vec<String> = s.check().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            problems,
            [
                "audience.tags_all[1] is blank",
                "audience.tags_none: \"VIP\" is also required, so the segment could take nobody",
            ]
        );
    }
}
