//! What Meta charges for a message and what a campaign costs: the `pricing`
//! object of status webhooks as a row keeps it, and the operator's rate card
//! that turns billable messages into an estimate (docs/ARCHITECTURE.md,
//! "Cost per campaign").
//!
//! Meta bills per delivered template message since July 2025 (`pricing_model
//! = "PMP"`): the price depends on the template's category and the
//! recipient's country. Meta's invoice is the truth; the estimate here is
//! the count of billable messages times the rate card, so that a campaign
//! owner sees the cost and the cost per conversion while it runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The categories Meta prices (the `pricing.category` of a status).
pub const PRICED_CATEGORIES: [&str; 6] = [
    "marketing",
    "marketing_lite",
    "utility",
    "authentication",
    "authentication_international",
    "service",
];

/// Meta's pricing of one message, as its row keeps it: recorded from the
/// first status that carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    /// `marketing`, `utility`, `authentication`, `marketing_lite`, …
    pub category: String,
    /// Whether Meta charges for it (a message inside a free entry point or
    /// service window is not billable).
    pub billable: bool,
    /// `PMP` (per message) or `CBP` (per conversation, before July 2025).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `regular`, `free_customer_service`, `free_entry_point`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The recipient's country (ISO 3166, from the phone number), which
    /// picks the rate; none for a contact known by user id only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl Pricing {
    /// The pricing of a status: `category` is required (a pricing object
    /// without one says nothing usable); `billable` defaults to true, as
    /// Meta's older payloads carried it on billable messages only.
    pub fn from_status(
        category: Option<&str>,
        billable: Option<bool>,
        model: Option<&str>,
        kind: Option<&str>,
    ) -> Option<Pricing> {
        let category = category?.trim().to_ascii_lowercase();
        if category.is_empty() {
            return None;
        }
        Some(Pricing {
            category,
            billable: billable.unwrap_or(true),
            model: model.map(str::to_string),
            kind: kind.map(str::to_string),
            country: None,
        })
    }
}

/// The operator's prices per category and country (`[pricing]` in the
/// config). Rates are per message, in `currency`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateCard {
    /// ISO 4217 code the rates are in (`USD`, `BRL`, …).
    pub currency: String,
    /// category → country (ISO 3166 alpha-2, or `"*"` for every country
    /// without its own rate) → price per message.
    #[serde(default)]
    pub rates: BTreeMap<String, BTreeMap<String, f64>>,
}

impl RateCard {
    /// The price of one billable message of `category` to `country`; none
    /// when the card has no rate for it.
    pub fn rate(&self, category: &str, country: Option<&str>) -> Option<f64> {
        let by_country = self.rates.get(category)?;
        country
            .and_then(|c| by_country.get(c))
            .or_else(|| by_country.get("*"))
            .copied()
    }

    /// Every problem with the card, each a sentence saying what to change.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let currency = self.currency.trim();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            problems.push(format!(
                "pricing.currency {:?} is not an ISO 4217 code: write three capital letters such as \"USD\"",
                self.currency
            ));
        }
        for (category, by_country) in &self.rates {
            if !PRICED_CATEGORIES.contains(&category.as_str()) {
                problems.push(format!(
                    "pricing.rates.{category}: Meta prices no such category (known: {})",
                    PRICED_CATEGORIES.join(", ")
                ));
            }
            for (country, rate) in by_country {
                let iso = country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase());
                if !iso && country != "*" {
                    problems.push(format!(
                        "pricing.rates.{category}.{country:?}: a country is an ISO 3166 code in capitals (\"BR\") or \"*\" for every other country"
                    ));
                }
                if !rate.is_finite() || *rate < 0.0 {
                    problems.push(format!(
                        "pricing.rates.{category}.{country}: {rate} is not a price (a number of {} ≥ 0 per message)",
                        self.currency
                    ));
                }
            }
        }
        problems
    }
}

/// Billable messages of one campaign (or step) by category and country, as
/// counted from its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BillableTally {
    /// category → country (`"?"` when unknown) → messages.
    pub messages: BTreeMap<String, BTreeMap<String, u64>>,
}

impl BillableTally {
    pub fn add(&mut self, pricing: &Pricing) {
        if !pricing.billable {
            return;
        }
        let country = pricing.country.as_deref().unwrap_or("?");
        *self
            .messages
            .entry(pricing.category.clone())
            .or_default()
            .entry(country.to_string())
            .or_default() += 1;
    }

    /// Billable messages by category.
    pub fn by_category(&self) -> BTreeMap<String, u64> {
        self.messages
            .iter()
            .map(|(category, by_country)| (category.clone(), by_country.values().sum()))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.messages.values().flat_map(|m| m.values()).sum()
    }

    /// The estimate under `card`; `conversions` divides it into a cost per
    /// conversion when the campaign has any.
    pub fn estimate(&self, card: &RateCard, conversions: u64) -> CostEstimate {
        let mut by_category = BTreeMap::new();
        let mut unpriced = 0;
        for (category, by_country) in &self.messages {
            let mut cost = 0.0;
            for (country, n) in by_country {
                let country = (country != "?").then_some(country.as_str());
                match card.rate(category, country) {
                    Some(rate) => cost += rate * *n as f64,
                    None => unpriced += n,
                }
            }
            by_category.insert(category.clone(), round_cents(cost));
        }
        let total = round_cents(by_category.values().sum());
        CostEstimate {
            currency: card.currency.clone(),
            total,
            by_category,
            per_conversion: (conversions > 0).then(|| round_cents(total / conversions as f64)),
            unpriced,
        }
    }
}

/// A campaign's estimated cost under the rate card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostEstimate {
    pub currency: String,
    pub total: f64,
    pub by_category: BTreeMap<String, f64>,
    /// `total` over the campaign's conversions; none without any.
    pub per_conversion: Option<f64>,
    /// Billable messages the card has no rate for (not in `total`).
    pub unpriced: u64,
}

/// Rounds to a ten-thousandth: Meta's rates have four decimals, and sums
/// of floats otherwise print as 12.499999999.
fn round_cents(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> RateCard {
        RateCard {
            currency: "USD".into(),
            rates: BTreeMap::from([
                (
                    "marketing".to_string(),
                    BTreeMap::from([("BR".to_string(), 0.0625), ("*".to_string(), 0.05)]),
                ),
                (
                    "utility".to_string(),
                    BTreeMap::from([("BR".to_string(), 0.008)]),
                ),
            ]),
        }
    }

    fn priced(category: &str, country: Option<&str>, billable: bool) -> Pricing {
        Pricing {
            category: category.into(),
            billable,
            model: Some("PMP".into()),
            kind: Some("regular".into()),
            country: country.map(str::to_string),
        }
    }

    #[test]
    fn a_country_rate_beats_the_default_and_a_missing_rate_is_unpriced() {
        let mut tally = BillableTally::default();
        for _ in 0..10 {
            tally.add(&priced("marketing", Some("BR"), true));
        }
        for _ in 0..4 {
            tally.add(&priced("marketing", Some("MX"), true));
        }
        tally.add(&priced("marketing", Some("MX"), false));
        tally.add(&priced("utility", Some("MX"), true));
        tally.add(&priced("utility", Some("BR"), true));
        assert_eq!(tally.total(), 16);
        let estimate = tally.estimate(&card(), 4);
        // 10 × 0.0625 + 4 × 0.05 (MX falls back to "*").
        assert_eq!(estimate.by_category["marketing"], 0.825);
        // utility: BR priced, MX has no rate and no "*".
        assert_eq!(estimate.by_category["utility"], 0.008);
        assert_eq!(estimate.unpriced, 1);
        assert_eq!(estimate.total, 0.833);
        assert_eq!(estimate.per_conversion, Some(0.2083));
        assert_eq!(tally.estimate(&card(), 0).per_conversion, None);
    }

    #[test]
    fn a_status_pricing_needs_a_category() {
        assert_eq!(
            Pricing::from_status(None, Some(true), Some("PMP"), None),
            None
        );
        let p =
            Pricing::from_status(Some("MARKETING"), None, Some("PMP"), Some("regular")).unwrap();
        assert_eq!(p.category, "marketing");
        assert!(p.billable);
    }

    #[test]
    fn card_problems_name_what_to_change() {
        let mut bad = card();
        bad.currency = "dollars".into();
        bad.rates
            .insert("promo".into(), BTreeMap::from([("Brazil".into(), -1.0)]));
        let problems = bad.problems();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("ISO 4217"));
        assert!(problems.iter().any(|p| p.contains("no such category")));
        assert!(problems.iter().any(|p| p.contains("ISO 3166")));
        assert!(problems.iter().any(|p| p.contains("not a price")));
        assert!(card().problems().is_empty());
    }
}
