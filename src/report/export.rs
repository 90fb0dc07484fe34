//! The per-contact export (`report`, CSV or JSON): one row per contact,
//! with one column group per journey step for a journey of more than one.

use serde::Serialize;

use super::PAGE;
use crate::domain::{CampaignSpec, ExclusionReason, FrozenParams, Journey, ParamKind};
use crate::store::{DispatchRecord, StepRecord, Store};

/// One row of the per-contact export: the contact's current step.
#[derive(Debug, Default, Serialize)]
pub struct ContactRow {
    pub contact: String,
    /// The occurrence of a triggered campaign's row (empty otherwise).
    pub occurrence: String,
    /// The contact's name from the audience record.
    pub name: String,
    /// The audience record's tags, `;`-separated (valued ones as
    /// `name=value`).
    pub tags: String,
    /// The WhatsApp template of the contact's current step, and its
    /// language (empty for an SMS step, or without the campaign's spec).
    pub template: String,
    pub language: String,
    pub state: String,
    pub reason: String,
    pub error_code: String,
    pub message: String,
    /// What Meta (or the SMS provider) said of the failure, as it said it.
    pub provider_message: String,
    pub wamid: String,
    /// The sender whose request was accepted.
    pub sender: String,
    /// Meta's pricing category when billable, `free` when not, empty
    /// before the first status.
    pub billing: String,
    pub staged_at: String,
    pub claimed_at: String,
    pub accepted_at: String,
    pub sent_at: String,
    pub delivered_at: String,
    pub read_at: String,
    pub replied_at: String,
    pub failed_at: String,
    pub excluded_at: String,
    /// The goal conversion credited to this journey (the four are empty
    /// without one).
    pub converted_goal: String,
    pub converted_at: String,
    pub conversion_value: String,
    pub conversion_currency: String,
    /// The frozen parameters of the current step ([`frozen_text`]), with
    /// [`ExportOptions::variables`] only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variables: Option<String>,
}

/// A journey's goal conversion as the export shows it.
#[derive(Debug, Default)]
struct ConversionColumns {
    pub converted_goal: String,
    pub converted_at: String,
    pub conversion_value: String,
    pub conversion_currency: String,
}

/// The names of [`ConversionColumns`], in the order of its cells.
const CONVERSION_COLUMNS: [&str; 4] = [
    "converted_goal",
    "converted_at",
    "conversion_value",
    "conversion_currency",
];

/// A cell a spreadsheet would read as a formula (it starts with `=`, `+`,
/// `-`, `@`, a tab or a carriage return) gets a leading `'`, which
/// spreadsheets show as text: a contact's name or Meta's message can never
/// run as a formula in the file someone opens. `audience import` takes the
/// `'` off again.
pub fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

impl ConversionColumns {
    fn of(r: &DispatchRecord) -> Self {
        let Some(c) = &r.conversion else {
            return ConversionColumns::default();
        };
        ConversionColumns {
            converted_goal: c.goal.clone(),
            converted_at: c.at.to_rfc3339(),
            conversion_value: c.value.map(|v| v.to_string()).unwrap_or_default(),
            conversion_currency: c.currency.clone().unwrap_or_default(),
        }
    }

    fn cells(&self) -> [&str; 4] {
        [
            &self.converted_goal,
            &self.converted_at,
            &self.conversion_value,
            &self.conversion_currency,
        ]
    }
}

/// One journey step of a contact, as its column group shows it (empty
/// when the contact never reached the step).
#[derive(Debug, Default, Serialize)]
pub struct StepColumns {
    pub state: String,
    pub reason: String,
    pub error_code: String,
    pub message: String,
    /// What Meta (or the SMS provider) said of the failure, as it said it.
    pub provider_message: String,
    /// The wamid, or the SMS provider's message id.
    pub message_id: String,
    pub sender: String,
    pub billing: String,
    /// When the contact reached the step.
    pub entered_at: String,
    pub claimed_at: String,
    pub accepted_at: String,
    pub sent_at: String,
    pub delivered_at: String,
    pub read_at: String,
    pub replied_at: String,
    pub failed_at: String,
    pub excluded_at: String,
}

/// The names of a step's columns, in the order of [`StepColumns::cells`].
const STEP_COLUMNS: [&str; 17] = [
    "state",
    "reason",
    "error_code",
    "message",
    "provider_message",
    "message_id",
    "sender",
    "billing",
    "entered_at",
    "claimed_at",
    "accepted_at",
    "sent_at",
    "delivered_at",
    "read_at",
    "replied_at",
    "failed_at",
    "excluded_at",
];

impl StepColumns {
    fn of(step: &StepRecord) -> Self {
        let t = |x: &Option<chrono::DateTime<chrono::Utc>>| {
            x.map(|t| t.to_rfc3339()).unwrap_or_default()
        };
        // A human-readable why, from the exclusion reason or the error code.
        let message = match (&step.reason, step.error_code) {
            (Some(reason), _) => reason
                .parse::<ExclusionReason>()
                .map(|e| e.description())
                .unwrap_or_else(|_| reason.clone()),
            (None, Some(code)) => crate::domain::describe_code(code).to_string(),
            (None, None) => step.error_message.clone().unwrap_or_default(),
        };
        let times = &step.times;
        StepColumns {
            state: step.state.as_str().to_string(),
            reason: step
                .reason
                .clone()
                .or_else(|| step.error_class.clone())
                .unwrap_or_default(),
            error_code: step.error_code.map(|c| c.to_string()).unwrap_or_default(),
            message,
            provider_message: step
                .error_message
                .clone()
                .filter(|_| step.error_code.is_some())
                .unwrap_or_default(),
            message_id: step.wamid.clone().unwrap_or_default(),
            sender: step.sender.clone().unwrap_or_default(),
            billing: match &step.pricing {
                Some(p) if p.billable => p.category.clone(),
                Some(_) => "free".into(),
                None => String::new(),
            },
            entered_at: t(&times.staged),
            claimed_at: t(&times.claimed),
            accepted_at: t(&times.accepted),
            sent_at: t(&times.sent),
            delivered_at: t(&times.delivered),
            read_at: t(&times.read),
            replied_at: t(&times.replied),
            failed_at: t(&times.failed),
            excluded_at: t(&times.excluded),
        }
    }

    fn cells(&self) -> [&str; 17] {
        [
            &self.state,
            &self.reason,
            &self.error_code,
            &self.message,
            &self.provider_message,
            &self.message_id,
            &self.sender,
            &self.billing,
            &self.entered_at,
            &self.claimed_at,
            &self.accepted_at,
            &self.sent_at,
            &self.delivered_at,
            &self.read_at,
            &self.replied_at,
            &self.failed_at,
            &self.excluded_at,
        ]
    }
}

/// The current step of a row as a step record (what the history keeps of
/// the steps before it).
fn current_step(r: &DispatchRecord) -> StepRecord {
    StepRecord {
        step: r.step.clone(),
        state: r.state,
        reason: r.reason.clone(),
        wamid: r.wamid.clone(),
        attempts: r.attempts,
        error_code: r.error_code,
        error_class: r.error_class.clone(),
        error_message: r.error_message.clone(),
        times: r.times.clone(),
        sender: r.sender.clone(),
        pricing: r.pricing.clone(),
    }
}

impl ContactRow {
    /// The CSV header, in the order of [`ContactRow::cells`].
    pub const COLUMNS: [&'static str; 27] = [
        "contact",
        "occurrence",
        "name",
        "tags",
        "template",
        "language",
        "state",
        "reason",
        "error_code",
        "message",
        "provider_message",
        "wamid",
        "sender",
        "billing",
        "staged_at",
        "claimed_at",
        "accepted_at",
        "sent_at",
        "delivered_at",
        "read_at",
        "replied_at",
        "failed_at",
        "excluded_at",
        "converted_goal",
        "converted_at",
        "conversion_value",
        "conversion_currency",
    ];

    /// The row's cells, in the order of [`ContactRow::COLUMNS`].
    pub fn cells(&self) -> [&str; 27] {
        [
            &self.contact,
            &self.occurrence,
            &self.name,
            &self.tags,
            &self.template,
            &self.language,
            &self.state,
            &self.reason,
            &self.error_code,
            &self.message,
            &self.provider_message,
            &self.wamid,
            &self.sender,
            &self.billing,
            &self.staged_at,
            &self.claimed_at,
            &self.accepted_at,
            &self.sent_at,
            &self.delivered_at,
            &self.read_at,
            &self.replied_at,
            &self.failed_at,
            &self.excluded_at,
            &self.converted_goal,
            &self.converted_at,
            &self.conversion_value,
            &self.conversion_currency,
        ]
    }

    /// The row of a record; `spec` (the campaign's) names the template of
    /// its current step.
    pub fn from_record(r: &DispatchRecord, spec: Option<&CampaignSpec>) -> Self {
        let c = StepColumns::of(&current_step(r));
        let conversion = ConversionColumns::of(r);
        let template = spec.and_then(|s| s.template_of(&r.step));
        ContactRow {
            contact: r.contact.as_str().to_string(),
            occurrence: r.contact.occurrence().unwrap_or_default().to_string(),
            name: r.name.clone().unwrap_or_default(),
            tags: r.tags.join(";"),
            template: template.map(|t| t.name.clone()).unwrap_or_default(),
            language: template.map(|t| t.language.clone()).unwrap_or_default(),
            state: c.state,
            reason: c.reason,
            error_code: c.error_code,
            message: c.message,
            provider_message: c.provider_message,
            wamid: c.message_id,
            sender: c.sender,
            billing: c.billing,
            staged_at: c.entered_at,
            claimed_at: c.claimed_at,
            accepted_at: c.accepted_at,
            sent_at: c.sent_at,
            delivered_at: c.delivered_at,
            read_at: c.read_at,
            replied_at: c.replied_at,
            failed_at: c.failed_at,
            excluded_at: c.excluded_at,
            converted_goal: conversion.converted_goal,
            converted_at: conversion.converted_at,
            conversion_value: conversion.conversion_value,
            conversion_currency: conversion.conversion_currency,
            variables: None,
        }
    }
}

/// What the per-contact export holds beyond its fixed columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// A `variables` column: the frozen parameters of each contact's
    /// current step. Off by default: they can hold personal data.
    pub variables: bool,
}

/// Frozen parameters as one cell: `name=Ana; coupon=A-1` for a template
/// with named parameters, `1=Ana; 2=A-1` for positional ones, then
/// `header.1=…` (or `header=<link>`) and `button.0=…`.
pub fn frozen_text(params: &FrozenParams) -> String {
    let value = |k: &ParamKind| match k {
        ParamKind::Text(t) => t.clone(),
        ParamKind::Currency { fallback_value, .. } | ParamKind::DateTime { fallback_value } => {
            fallback_value.clone()
        }
    };
    let mut items: Vec<String> = params
        .body
        .iter()
        .enumerate()
        .map(|(i, p)| match &p.name {
            Some(name) => format!("{name}={}", value(&p.kind)),
            None => format!("{}={}", i + 1, value(&p.kind)),
        })
        .collect();
    if let Some(h) = &params.header {
        items.extend(
            h.text_params
                .iter()
                .enumerate()
                .map(|(i, t)| format!("header.{}={t}", i + 1)),
        );
        if let Some(media) = h.link.as_ref().or(h.media_id.as_ref()) {
            items.push(format!("header={media}"));
        }
    }
    for b in &params.buttons {
        items.extend(b.params.iter().map(|p| format!("button.{}={p}", b.index)));
    }
    items.join("; ")
}

/// The steps of a journey export: their ids in the spec's order, the
/// first as rows name it (`""`) and as columns show it.
struct StepOrder {
    raw: Vec<String>,
    names: Vec<String>,
    /// Each step's WhatsApp template and language (empty for SMS).
    templates: Vec<(String, String)>,
}

impl StepOrder {
    fn of(journey: &Journey, spec: Option<&CampaignSpec>) -> Self {
        let (raw, names): (Vec<String>, Vec<String>) = journey
            .row_steps()
            .map(|(raw, id)| (raw.to_string(), id.to_string()))
            .unzip();
        let templates = raw
            .iter()
            .map(|id| match spec.and_then(|s| s.template_of(id)) {
                Some(t) => (t.name.clone(), t.language.clone()),
                None => Default::default(),
            })
            .collect();
        StepOrder {
            raw,
            names,
            templates,
        }
    }

    /// `contact`, `occurrence`, `name`, `tags`, `step` (the current one),
    /// then `<step>.template`, `<step>.language` and `<step>.<column>` for
    /// every step, then the journey's conversion.
    fn header(&self) -> Vec<String> {
        let mut out = vec![
            "contact".to_string(),
            "occurrence".to_string(),
            "name".to_string(),
            "tags".to_string(),
            "step".to_string(),
        ];
        for name in &self.names {
            out.push(format!("{name}.template"));
            out.push(format!("{name}.language"));
            out.extend(STEP_COLUMNS.iter().map(|c| format!("{name}.{c}")));
        }
        out.extend(CONVERSION_COLUMNS.iter().map(|c| c.to_string()));
        out
    }

    /// A row's column groups, one per step (empty when not reached).
    fn groups(&self, r: &DispatchRecord) -> Vec<StepColumns> {
        self.raw
            .iter()
            .map(|id| {
                if *id == r.step {
                    StepColumns::of(&current_step(r))
                } else {
                    r.history
                        .iter()
                        .find(|h| h.step == *id)
                        .map(StepColumns::of)
                        .unwrap_or_default()
                }
            })
            .collect()
    }

    /// The current step's id as columns show it.
    fn name<'a>(&'a self, r: &'a DispatchRecord) -> &'a str {
        match self.raw.iter().position(|id| *id == r.step) {
            Some(i) => &self.names[i],
            None => &r.step,
        }
    }
}

/// A journey contact in the JSON export: the current step's fields, its
/// id, and every step's group by id.
#[derive(Serialize)]
struct JourneyRow<'a> {
    #[serde(flatten)]
    row: ContactRow,
    step: &'a str,
    steps: StepGroups<'a>,
}

struct StepGroups<'a>(&'a [String], Vec<StepColumns>);

impl Serialize for StepGroups<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().zip(&self.1))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Json,
    /// An Excel workbook: one sheet, the CSV's columns, text cells.
    Xlsx,
}

/// The most rows a sheet holds (Excel's limit, the header included).
const XLSX_MAX_ROWS: u32 = 1_048_576;

/// Where the rows of a tabular export go: a CSV (cells escaped against
/// formulas, handed over a page at a time) or a sheet (text cells, which a
/// spreadsheet never runs, so nothing is escaped).
enum Table {
    Csv(Box<csv::Writer<Vec<u8>>>),
    Xlsx {
        book: Box<rust_xlsxwriter::Workbook>,
        row: u32,
        columns: u16,
    },
}

impl Table {
    fn new(format: Format) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Xlsx => {
                let mut book = Box::new(rust_xlsxwriter::Workbook::new());
                book.add_worksheet_with_constant_memory()?
                    .set_name("contacts")?;
                Table::Xlsx {
                    book,
                    row: 0,
                    columns: 0,
                }
            }
            _ => Table::Csv(Box::new(csv::Writer::from_writer(Vec::with_capacity(
                64 * 1024,
            )))),
        })
    }

    fn write<S: AsRef<str>>(&mut self, cells: &[S]) -> anyhow::Result<()> {
        match self {
            Table::Csv(w) => w.write_record(
                cells
                    .iter()
                    .map(|c| spreadsheet_safe(c.as_ref()).into_owned()),
            )?,
            Table::Xlsx { book, row, columns } => {
                if *row >= XLSX_MAX_ROWS {
                    anyhow::bail!(
                        "the campaign has more contacts than a sheet holds ({} rows): export it with --format csv",
                        XLSX_MAX_ROWS - 1
                    );
                }
                let sheet = book.worksheet_from_index(0)?;
                for (col, cell) in cells.iter().enumerate() {
                    let text = cell.as_ref();
                    if !text.is_empty() {
                        sheet.write_string(*row, col as u16, text)?;
                    }
                }
                *columns = (*columns).max(cells.len() as u16);
                *row += 1;
            }
        }
        Ok(())
    }

    /// Hands a CSV's page of bytes over, keeping memory flat.
    fn flush_page(&mut self, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        if let Table::Csv(w) = self {
            w.flush()?;
            let done = std::mem::replace(w.as_mut(), csv::Writer::from_writer(Vec::new()));
            out.write_all(&done.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?)?;
        }
        Ok(())
    }

    /// Writes what is left: a workbook is written whole, with its header
    /// row frozen and filterable.
    fn finish(self, out: &mut impl std::io::Write) -> anyhow::Result<()> {
        match self {
            Table::Csv(w) => {
                let mut w = *w;
                w.flush()?;
                out.write_all(&w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?)?;
            }
            Table::Xlsx {
                mut book,
                row,
                columns,
            } => {
                if row > 0 && columns > 0 {
                    let sheet = book.worksheet_from_index(0)?;
                    sheet.set_freeze_panes(1, 0)?;
                    sheet.autofilter(0, 0, row - 1, columns - 1)?;
                }
                out.write_all(&book.save_to_buffer()?)?;
            }
        }
        Ok(())
    }
}

/// Streams every contact of a campaign to `out` (a page of the store at a
/// time; a workbook is assembled on disk and written at the end). Returns
/// the number of rows written. `spec` (the campaign's, when known) names
/// each step's template; with a journey of more than one step, each contact
/// gets one column group per step.
pub async fn export(
    store: &dyn Store,
    campaign: &str,
    format: Format,
    spec: Option<&CampaignSpec>,
    options: ExportOptions,
    mut out: impl std::io::Write,
    progress: Option<&indicatif::ProgressBar>,
) -> anyhow::Result<u64> {
    let journey = spec.and_then(|s| s.journey().ok());
    let steps = journey
        .as_ref()
        .filter(|j| j.has_steps())
        .map(|j| StepOrder::of(j, spec));
    let mut n = 0u64;
    let mut after = None;
    if format == Format::Json {
        out.write_all(b"[\n")?;
    }
    let mut table = Table::new(format)?;
    if format != Format::Json {
        let mut header: Vec<String> = match &steps {
            Some(steps) => steps.header(),
            None => ContactRow::COLUMNS.map(String::from).to_vec(),
        };
        if options.variables {
            header.push("variables".into());
        }
        table.write(&header)?;
    }
    loop {
        let page = store
            .scan_dispatches(campaign, after.as_ref(), PAGE)
            .await?;
        for r in &page {
            let variables = options.variables.then(|| frozen_text(&r.params));
            match (format, &steps) {
                (Format::Json, _) => {
                    if n > 0 {
                        out.write_all(b",\n")?;
                    }
                    let mut row = ContactRow::from_record(r, spec);
                    row.variables = variables;
                    match &steps {
                        None => serde_json::to_writer(&mut out, &row)?,
                        Some(steps) => serde_json::to_writer(
                            &mut out,
                            &JourneyRow {
                                row,
                                step: steps.name(r),
                                steps: StepGroups(&steps.names, steps.groups(r)),
                            },
                        )?,
                    }
                }
                (_, None) => {
                    let row = ContactRow::from_record(r, spec);
                    let mut cells = row.cells().to_vec();
                    cells.extend(variables.as_deref());
                    table.write(&cells)?;
                }
                (_, Some(steps)) => {
                    let groups = steps.groups(r);
                    let tags = r.tags.join(";");
                    let mut cells = vec![
                        r.contact.as_str(),
                        r.contact.occurrence().unwrap_or_default(),
                        r.name.as_deref().unwrap_or_default(),
                        tags.as_str(),
                        steps.name(r),
                    ];
                    for (g, (template, language)) in groups.iter().zip(&steps.templates) {
                        // A step's template shows where the contact reached it.
                        let reached = !g.state.is_empty();
                        cells.push(if reached { template } else { "" });
                        cells.push(if reached { language } else { "" });
                        cells.extend(g.cells());
                    }
                    let conversion = ConversionColumns::of(r);
                    cells.extend(conversion.cells());
                    cells.extend(variables.as_deref());
                    table.write(&cells)?;
                }
            }
            n += 1;
        }
        table.flush_page(&mut out)?;
        if let Some(pb) = progress {
            pb.inc(page.len() as u64);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.contact.clone()),
            _ => break,
        }
    }
    if format == Format::Json {
        out.write_all(b"\n]\n")?;
    }
    table.finish(&mut out)?;
    out.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_cells_in_their_order() {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(ContactRow::default()).unwrap();
        let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), ContactRow::COLUMNS.join(","));
    }

    #[test]
    fn cells_a_spreadsheet_would_run_are_escaped() {
        for (cell, safe) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+525512345678", "'+525512345678"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("María", "María"),
            ("", ""),
        ] {
            assert_eq!(spreadsheet_safe(cell), safe);
        }
    }
}
