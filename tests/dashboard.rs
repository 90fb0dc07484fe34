//! The Grafana dashboard and its provisioning files stay in step with the
//! metrics the daemon registers: a renamed or removed metric fails here, not
//! as an empty panel in production.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

const DASHBOARD: &str = "grafana/dashboards/wadispatch.json";
const DATASOURCE: &str = "${datasource}";
/// Where the dashboard provider expects the dashboards directory to be mounted.
const DASHBOARDS_PATH: &str = "/var/lib/grafana/dashboards/wadispatch";
const METRIC_PREFIX: &str = "wadispatch_";

fn repo_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel in document order, the panels nested in (collapsed) rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"].as_str() == Some("row")
}

fn title(panel: &Value) -> String {
    match panel["title"].as_str() {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => format!("(untitled panel id {})", panel["id"]),
    }
}

fn template_variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

/// The queries of one template variable: `definition`, and `query` whether it
/// is a plain string or the object newer Grafana versions write.
fn variable_queries(variable: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(q) = variable["definition"].as_str() {
        out.push(q.to_string());
    }
    match &variable["query"] {
        Value::String(q) => out.push(q.clone()),
        Value::Object(o) => {
            if let Some(q) = o.get("query").and_then(Value::as_str) {
                out.push(q.to_string());
            }
        }
        _ => {}
    }
    out
}

/// Every PromQL expression of the dashboard, with where it was found.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("panel \"{}\"", title(panel)), expr.to_string()));
            }
        }
    }
    for variable in template_variables(dashboard) {
        let name = variable["name"].as_str().unwrap_or("?");
        for query in variable_queries(variable) {
            out.push((format!("variable ${name}"), query));
        }
    }
    out
}

/// Words of `expr` that start with `wadispatch_`. A word is a maximal run of
/// the characters a PromQL metric name may hold (`[A-Za-z0-9_:]`), so a name is
/// never taken from the middle of a longer identifier, and a name with a
/// character outside `[a-z0-9_]` is kept whole (and then reported as unknown).
fn metric_names(expr: &str) -> Vec<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if is_name_char(c) {
            word.push(c);
            continue;
        }
        if word.len() > METRIC_PREFIX.len() && word.starts_with(METRIC_PREFIX) {
            names.push(word.clone());
        }
        word.clear();
    }
    names
}

/// The registered family a name in a query refers to: the name itself, or a
/// histogram's series without its `_bucket`, `_sum` or `_count` suffix.
fn family<'a>(name: &'a str, known: &BTreeSet<String>) -> Option<&'a str> {
    if known.contains(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"]
        .into_iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| known.contains(*base))
}

#[test]
fn scanner_finds_whole_metric_names() {
    let expr = "histogram_quantile(0.99, sum by (le) (rate(wadispatch_webhook_duration_seconds_bucket[$__rate_interval])))\n/ x_wadispatch_no + wadispatch_a:b{campaign=~\"$campaign\"}";
    assert_eq!(
        metric_names(expr),
        [
            "wadispatch_webhook_duration_seconds_bucket",
            "wadispatch_a:b"
        ]
    );
    let known: BTreeSet<String> = ["wadispatch_webhook_duration_seconds".to_string()].into();
    assert_eq!(
        family("wadispatch_webhook_duration_seconds_bucket", &known),
        Some("wadispatch_webhook_duration_seconds")
    );
    assert_eq!(family("wadispatch_other_count", &known), None);
}

#[test]
fn dashboard_queries_only_registered_metrics() {
    let known: BTreeSet<String> = wadispatch::metrics::metrics().names().into_iter().collect();
    assert!(!known.is_empty(), "metrics().names() returned nothing");
    let dashboard = dashboard();
    let expressions = expressions(&dashboard);
    assert!(!expressions.is_empty(), "{DASHBOARD} has no queries");

    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for (place, expr) in &expressions {
        for name in metric_names(expr) {
            match family(&name, &known) {
                Some(base) => {
                    used.insert(base.to_string());
                }
                None => {
                    let line = format!("  {place}: {name}");
                    if !unknown.contains(&line) {
                        unknown.push(line);
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "{DASHBOARD} queries metrics that src/metrics.rs does not register:\n{}\nregistered: {}",
        unknown.join("\n"),
        known.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    let unused: Vec<&String> = known.difference(&used).collect();
    if !unused.is_empty() {
        // Not an error: a new metric may come before its panel.
        eprintln!("metrics not shown on the dashboard: {unused:?}");
    }
}

#[test]
fn alert_rules_name_only_registered_metrics() {
    let known: BTreeSet<String> = wadispatch::metrics::metrics().names().into_iter().collect();
    let rules = read("grafana/alerts.yml");
    let exprs: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect();
    assert!(
        exprs.len() >= 4,
        "grafana/alerts.yml has {} rules",
        exprs.len()
    );
    for expr in exprs {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "an alert on no wadispatch metric: {expr}"
        );
        for name in names {
            assert!(
                family(&name, &known).is_some(),
                "grafana/alerts.yml: {name} is not registered by src/metrics.rs"
            );
        }
    }
    assert!(read("grafana/prometheus.yml").contains("- alerts.yml"));
}

fn datasource_uid(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("uid").and_then(Value::as_str),
        _ => None,
    }
}

#[test]
fn every_panel_queries_the_datasource_variable() {
    let dashboard = dashboard();
    assert_eq!(
        dashboard["uid"].as_str(),
        Some("wadispatch"),
        "dashboard uid"
    );
    assert_eq!(
        dashboard["title"].as_str(),
        Some("wadispatch"),
        "dashboard title"
    );

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    let mut queried = 0;
    for panel in panels(&dashboard) {
        let title = title(panel);
        if let Some(id) = panel["id"].as_u64() {
            if !ids.insert(id) {
                problems.push(format!("  \"{title}\": panel id {id} is used twice"));
            }
        }
        if is_row(panel) {
            continue;
        }
        queried += 1;
        if datasource_uid(&panel["datasource"]) != Some(DATASOURCE) {
            problems.push(format!(
                "  \"{title}\": datasource is {}, not {DATASOURCE}",
                panel["datasource"]
            ));
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if targets.is_empty() {
            problems.push(format!("  \"{title}\": no targets"));
        }
        for target in targets {
            let refid = target["refId"].as_str().unwrap_or("?");
            match target["expr"].as_str() {
                Some(expr) if !expr.trim().is_empty() => {}
                _ => problems.push(format!("  \"{title}\": target {refid} has no expr")),
            }
            if let Some(ds) = target.get("datasource") {
                if datasource_uid(ds) != Some(DATASOURCE) {
                    problems.push(format!(
                        "  \"{title}\": target {refid} datasource is {ds}, not {DATASOURCE}"
                    ));
                }
            }
        }
    }
    assert!(queried > 0, "{DASHBOARD} has no panels");
    assert!(problems.is_empty(), "{DASHBOARD}:\n{}", problems.join("\n"));
}

#[test]
fn dashboard_has_the_campaign_and_datasource_variables() {
    let dashboard = dashboard();
    let variables = template_variables(&dashboard);
    let find = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("{DASHBOARD}: no template variable `{name}`"))
    };

    let datasource = find("datasource");
    assert_eq!(datasource["type"].as_str(), Some("datasource"));
    assert_eq!(datasource["query"].as_str(), Some("prometheus"));

    let campaign = find("campaign");
    assert_eq!(
        campaign["multi"].as_bool(),
        Some(true),
        "$campaign is multi-value"
    );
    assert_eq!(
        campaign["includeAll"].as_bool(),
        Some(true),
        "$campaign includes All"
    );
    assert_eq!(datasource_uid(&campaign["datasource"]), Some(DATASOURCE));
    assert!(
        variable_queries(campaign)
            .iter()
            .any(|q| q == "label_values(wadispatch_campaign_contacts{kind=~\"$kind\"}, campaign)"),
        "$campaign lists the campaigns of wadispatch_campaign_contacts of the kinds $kind selects"
    );
    // "All" must expand to the campaigns listed (of the selected kinds), not
    // to ".*", or the real/test selector would select nothing.
    assert!(
        campaign.get("allValue").is_none(),
        "$campaign has no allValue"
    );
    let kind = find("kind");
    assert_eq!(kind["type"].as_str(), Some("custom"));
    assert_eq!(kind["query"].as_str(), Some("real,test"));
    assert_eq!(kind["includeAll"].as_bool(), Some(true));
    let position = |name: &str| {
        variables
            .iter()
            .position(|v| v["name"].as_str() == Some(name))
            .unwrap()
    };
    assert!(
        position("kind") < position("campaign"),
        "$kind comes before the $campaign that depends on it"
    );
}

#[test]
fn provisioning_files_point_at_the_dashboards() {
    let provider = read("grafana/provisioning/dashboards/wadispatch.yml");
    for needle in ["providers:", "type: file", DASHBOARDS_PATH] {
        assert!(
            provider.contains(needle),
            "grafana/provisioning/dashboards/wadispatch.yml does not mention `{needle}`"
        );
    }

    let datasource = read("grafana/provisioning/datasources/prometheus.yml");
    for needle in ["datasources:", "type: prometheus", "uid: "] {
        assert!(
            datasource.contains(needle),
            "grafana/provisioning/datasources/prometheus.yml does not mention `{needle}`"
        );
    }

    let readme = read("grafana/README.md");
    assert!(
        readme.contains(DASHBOARDS_PATH),
        "grafana/README.md does not show where to mount the dashboards ({DASHBOARDS_PATH})"
    );

    let scrape = read("grafana/prometheus.yml");
    assert!(
        scrape.contains("metrics_path: /metrics"),
        "grafana/prometheus.yml does not scrape /metrics"
    );
}

#[test]
fn journeys_have_a_panel_per_step_and_their_timers() {
    let dashboard = dashboard();
    let variables = template_variables(&dashboard);
    let step = variables
        .iter()
        .find(|v| v["name"].as_str() == Some("step"))
        .unwrap_or_else(|| panic!("{DASHBOARD}: no template variable `step`"));
    assert!(
        variable_queries(step)
            .iter()
            .any(|q| q.contains("label_values(wadispatch_campaign_step_contacts")),
        "$step lists the steps of wadispatch_campaign_step_contacts"
    );
    let all = panels(&dashboard);
    let queries = |p: &Value| -> Vec<String> {
        p["targets"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|t| t["expr"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let per_step = all
        .iter()
        .find(|p| p["repeat"].as_str() == Some("step"))
        .unwrap_or_else(|| panic!("{DASHBOARD}: no panel repeated by $step"));
    let exprs = queries(per_step);
    assert!(
        !exprs.is_empty()
            && exprs
                .iter()
                .all(|e| e.contains("wadispatch_campaign_step_contacts") && e.contains("$step")),
        "the per-step panel reads each step's contacts: {exprs:?}"
    );
    assert!(
        all.iter()
            .flat_map(|p| queries(p))
            .any(|e| e.contains("wadispatch_campaign_timers")),
        "{DASHBOARD}: no panel shows the timers waiting"
    );
}

#[test]
fn triggered_campaigns_show_their_cancels_and_caps() {
    let dashboard = dashboard();
    let all = panels(&dashboard);
    let row = all
        .iter()
        .position(|p| is_row(p) && title(p) == "Triggered campaigns")
        .unwrap_or_else(|| panic!("{DASHBOARD}: no row \"Triggered campaigns\""));
    let exprs: Vec<String> = expressions(&dashboard)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("wadispatch_trigger_cancels_total") && e.contains("outcome")),
        "{DASHBOARD}: no panel shows the cancels by outcome"
    );
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("wadispatch_exclusions_total")
                && e.contains("cancelled")
                && e.contains("frequency_cap")),
        "{DASHBOARD}: no panel shows the occurrences cancelled and capped"
    );
    assert!(row + 2 < all.len(), "the row has its panels");
}

#[test]
fn goals_show_conversions_their_rate_and_value() {
    let dashboard = dashboard();
    let all = panels(&dashboard);
    let row = all
        .iter()
        .position(|p| is_row(p) && title(p) == "Goals and conversions")
        .unwrap_or_else(|| panic!("{DASHBOARD}: no row \"Goals and conversions\""));
    let exprs: Vec<String> = expressions(&dashboard)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    for (needle, what) in [
        ("wadispatch_conversions_total", "conversions"),
        ("wadispatch_conversion_value_total", "the value by currency"),
        (
            "wadispatch_conversion_records_total",
            "the records by outcome",
        ),
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(needle)),
            "{DASHBOARD}: no panel shows {what} ({needle})"
        );
    }
    assert!(
        exprs.iter().any(
            |e| e.contains("wadispatch_conversions_total") && e.contains("status=\"accepted\"")
        ),
        "{DASHBOARD}: no panel shows the conversion rate (conversions / accepted)"
    );
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("conversion_value") && e.contains("currency")),
        "{DASHBOARD}: the value is not split by currency"
    );
    assert!(row + 3 < all.len(), "the row has its panels");
}

#[test]
fn meta_signals_show_held_templates_and_the_limit_in_force() {
    let dashboard = dashboard();
    let all = panels(&dashboard);
    let row = all
        .iter()
        .position(|p| is_row(p) && title(p).starts_with("Meta's signals"))
        .unwrap_or_else(|| panic!("{DASHBOARD}: no row \"Meta's signals\""));
    let exprs: Vec<String> = expressions(&dashboard)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    for metric in [
        "wadispatch_templates_held",
        "wadispatch_portfolio_limit",
        "wadispatch_template_updates_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "{DASHBOARD}: no panel shows {metric}"
        );
    }
    assert!(row + 3 < all.len(), "the row has its panels");
    let rules = read("grafana/alerts.yml");
    assert!(
        rules.contains("wadispatch_templates_held"),
        "an alert on held templates"
    );
}

#[test]
fn cost_shows_billable_messages_and_the_estimates() {
    let dashboard = dashboard();
    let all = panels(&dashboard);
    let row = all
        .iter()
        .position(|p| is_row(p) && title(p).starts_with("Cost"))
        .unwrap_or_else(|| panic!("{DASHBOARD}: no row \"Cost\""));
    let exprs: Vec<String> = expressions(&dashboard)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    for metric in [
        "wadispatch_billable_messages_total",
        "wadispatch_campaign_estimated_cost",
        "wadispatch_campaign_cost_per_conversion",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "{DASHBOARD}: no panel shows {metric}"
        );
    }
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("wadispatch_billable_messages_total") && e.contains("category")),
        "{DASHBOARD}: billable messages are not split by category"
    );
    assert!(row + 3 < all.len(), "the row has its panels");
}
