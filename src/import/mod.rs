//! `wadispatch audience import`: a CSV file → keyed records on `wa.audience`.
//!
//! Columns `phone`, `user_id`, `name`, `timezone`, `send_after` and `tags`
//! (separated by `;`, `name=value` for a valued tag) map to contact fields;
//! every other column is a template
//! variable. Empty cells are absent values, so a template that needs them
//! shows the contact as `missing_variable:<column>` in the report.
//!
//! Rows with neither phone nor user id cannot be keyed and are not produced.
//! Rows with a phone that does not parse are produced under the raw value, so
//! the contact appears in the report as `invalid_phone` instead of vanishing.
//! Duplicate contacts are produced too (ingest stages them once) and listed.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::domain::{AudienceRecord, ContactInfo};
use crate::ingest::client_config;

mod sheet;

/// Records in flight before we wait for delivery reports: bounds memory
/// while keeping the producer's batches full.
const IN_FLIGHT: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error(
        "{path}: the CSV has no `phone`, `user_id` or `contact` column (found: {found}){hint}"
    )]
    NoContactColumn {
        path: String,
        found: String,
        hint: String,
    },
    #[error("{path}: the header names {columns} more than once; each column must be named once (rename or remove the copies)")]
    DuplicateColumns { path: String, columns: String },
    #[error("{path} line {line}: {message}")]
    Csv {
        path: String,
        line: u64,
        message: String,
    },
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{failed} records were not acknowledged by the broker (first error: {first}); run the import again: records already staged are recognised as duplicates")]
    Undelivered { failed: u64, first: String },
}

/// A problem found in one row, with its line number in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowProblem {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Default, Clone)]
pub struct ImportReport {
    pub rows: u64,
    /// The file was not UTF-8 and was read as Windows-1252 (Latin-1): the
    /// line of its first byte that is not UTF-8.
    pub converted_from_latin1: Option<u64>,
    /// Rows of a report left out by `--state`.
    pub other_state: u64,
    /// With the campaign's spec: rows staging would exclude, with why
    /// (`missing_variable:coupon`, `invalid_field:send_after`, …), and
    /// rows whose timezone is unknown (they use their phone's country's).
    pub would_exclude: Vec<RowProblem>,
    pub unknown_timezone: Vec<RowProblem>,
    pub missing_contact: Vec<RowProblem>,
    pub invalid_phone: Vec<RowProblem>,
    /// Cells of a workbook holding a formula error (`#N/A`, `#REF!`): read
    /// as empty, each with its cell.
    pub cell_errors: Vec<RowProblem>,
    /// Phones a workbook holds as numbers (which lose a leading `+`).
    pub numeric_phones: u64,
    /// (line, line of the first occurrence).
    pub duplicates: Vec<(u64, u64)>,
}

impl ImportReport {
    /// Human summary with line numbers (at most `max_lines` per category).
    pub fn render(&self, max_lines: usize) -> String {
        let mut out = String::new();
        if let Some(line) = self.converted_from_latin1 {
            out.push_str(&format!(
                "the file is not UTF-8 (first at line {line}): read as Windows-1252 (Latin-1), as Excel writes CSV in Europe and Latin America; check the accents of that line\n"
            ));
        }
        out.push_str(&format!(
            "rows read: {}\nrecords to produce: {}\n",
            self.rows,
            self.rows - self.missing_contact.len() as u64 - self.other_state
        ));
        if self.other_state > 0 {
            out.push_str(&format!(
                "rows of other states left out (--state): {}\n",
                self.other_state
            ));
        }
        let list = |out: &mut String, title: &str, items: &[RowProblem]| {
            if items.is_empty() {
                return;
            }
            out.push_str(&format!("{title}: {}\n", items.len()));
            for p in items.iter().take(max_lines) {
                out.push_str(&format!("  line {}: {}\n", p.line, p.message));
            }
            if items.len() > max_lines {
                out.push_str(&format!("  … and {} more\n", items.len() - max_lines));
            }
        };
        list(
            &mut out,
            "skipped, no phone or user id",
            &self.missing_contact,
        );
        list(
            &mut out,
            "would be excluded at staging (checked against the campaign's spec)",
            &self.would_exclude,
        );
        list(
            &mut out,
            "unknown timezone (the phone's country's is used instead)",
            &self.unknown_timezone,
        );
        list(
            &mut out,
            "invalid phone (produced, will be excluded as invalid_phone)",
            &self.invalid_phone,
        );
        if self.numeric_phones > 0 && !self.invalid_phone.is_empty() {
            out.push_str(&format!(
                "{} phones are numbers in the sheet, which drops their leading +: format the phone column as text in the spreadsheet, or set dispatch.default_region for national numbers\n",
                self.numeric_phones
            ));
        }
        list(
            &mut out,
            "cells holding a spreadsheet error (read as empty; fix them in the sheet)",
            &self.cell_errors,
        );
        if !self.duplicates.is_empty() {
            out.push_str(&format!(
                "duplicate contacts (produced, staged once): {}\n",
                self.duplicates.len()
            ));
            for (line, first) in self.duplicates.iter().take(max_lines) {
                out.push_str(&format!("  line {line}: same contact as line {first}\n"));
            }
            if self.duplicates.len() > max_lines {
                out.push_str(&format!(
                    "  … and {} more\n",
                    self.duplicates.len() - max_lines
                ));
            }
        }
        out
    }
}

impl ImportReport {
    /// Every problem row (skipped, invalid phone, duplicate, and with a
    /// spec the exclusions and unknown timezones).
    pub fn problem_count(&self) -> usize {
        self.missing_contact.len()
            + self.invalid_phone.len()
            + self.duplicates.len()
            + self.would_exclude.len()
            + self.unknown_timezone.len()
            + self.cell_errors.len()
    }

    /// Checks every record against the campaign's spec as staging will:
    /// the exclusions it would record (a missing variable, an unreadable
    /// `send_after`, a bad user id, outside the segment, not a test
    /// recipient) and the timezones it would not know, each with its line.
    pub fn check_against(
        &mut self,
        records: &[KeyedRecord],
        spec: &crate::domain::CampaignSpec,
        compiled: &crate::domain::template::CompiledTemplate,
        default_region: Option<&str>,
    ) {
        for r in records {
            let staged = crate::domain::stage(
                spec,
                compiled,
                Some(r.key.as_bytes()),
                &r.record,
                default_region,
            );
            match staged.exclusion {
                // Already listed as an invalid phone.
                Some(crate::domain::ExclusionReason::InvalidPhone) | None => {}
                Some(reason) => self.would_exclude.push(RowProblem {
                    line: r.line,
                    message: format!("{reason} ({})", reason.description()),
                }),
            }
            if let Some(tz) = r.record.contact.timezone.as_deref() {
                if crate::domain::parse_timezone(tz).is_none() {
                    self.unknown_timezone.push(RowProblem {
                        line: r.line,
                        message: format!(
                            "{tz:?} is not an IANA timezone such as America/Mexico_City"
                        ),
                    });
                }
            }
        }
    }

    /// Writes every problem as CSV (`line,problem`) to `path`; answers how
    /// many.
    pub fn write_problems(&self, path: &std::path::Path) -> std::io::Result<usize> {
        let mut w = csv::Writer::from_path(path)?;
        w.write_record(["line", "problem"])?;
        let mut rows: Vec<(u64, String)> = Vec::new();
        for p in &self.missing_contact {
            rows.push((p.line, format!("skipped: {}", p.message)));
        }
        for p in &self.invalid_phone {
            rows.push((
                p.line,
                format!("invalid phone (excluded as invalid_phone): {}", p.message),
            ));
        }
        for (line, first) in &self.duplicates {
            rows.push((
                *line,
                format!("duplicate contact: same as line {first} (staged once)"),
            ));
        }
        for p in &self.would_exclude {
            rows.push((p.line, format!("would be excluded: {}", p.message)));
        }
        for p in &self.unknown_timezone {
            rows.push((p.line, format!("unknown timezone: {}", p.message)));
        }
        for p in &self.cell_errors {
            rows.push((
                p.line,
                format!("spreadsheet error, read as empty: {}", p.message),
            ));
        }
        rows.sort();
        for (line, problem) in &rows {
            w.write_record([line.to_string().as_str(), problem.as_str()])?;
        }
        w.flush()?;
        Ok(rows.len())
    }
}

/// Asks the brokers for their metadata (5 s at most): an unreachable
/// cluster is an error that says so at once.
pub async fn probe(brokers: &str, extra: &[(String, String)]) -> Result<(), ImportError> {
    let cfg = client_config(brokers, extra);
    let brokers = brokers.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer<crate::ingest::kafka_log::QuietContext> = cfg
            .create_with_context(crate::ingest::kafka_log::QuietContext)
            .map_err(|e| ImportError::Kafka(e.to_string()))?;
        rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(5))
            .map(drop)
            .map_err(|e| {
                ImportError::Kafka(format!(
                    "cannot reach the brokers at {brokers} within 5 s ({e}); check --brokers or kafka.brokers, and that Kafka runs"
                ))
            })
    })
    .await
    .map_err(|e| ImportError::Kafka(e.to_string()))?
}

/// One row turned into a keyed audience record.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedRecord {
    pub line: u64,
    pub key: String,
    pub record: AudienceRecord,
}

/// How a file is read.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The field separator (`,`; `;` for Excel in much of Europe and Latin
    /// America; tab).
    pub delimiter: u8,
    /// For a report read back as an audience: only the rows in these states
    /// (`failed`, `excluded`); empty takes every row.
    pub states: Vec<String>,
    /// The sheet of a workbook to read (default: the first).
    pub sheet: Option<String>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            delimiter: b',',
            states: Vec::new(),
            sheet: None,
        }
    }
}

/// Columns of a `report` export that are not template variables: a report
/// read back as an audience keeps its contacts and tags, nothing else.
fn is_report_column(column: &str) -> bool {
    crate::report::ContactRow::COLUMNS.contains(&column) || column == "step" || column.contains('.')
}

/// Parses the CSV and validates every row; pure (no Kafka), so the same
/// checks run in tests and in `--dry-run`.
pub fn parse_csv(
    input: impl Read,
    path: &str,
    campaign_id: &str,
    default_region: Option<&str>,
) -> Result<(Vec<KeyedRecord>, ImportReport), ImportError> {
    parse_csv_with(
        input,
        path,
        campaign_id,
        default_region,
        &ImportOptions::default(),
    )
}

/// Reads a whole file's bytes: UTF-8 (a byte-order mark is dropped), else
/// Windows-1252, which every byte sequence is, converted and said with the
/// line of the first byte that was not UTF-8.
pub fn parse_bytes(
    bytes: &[u8],
    path: &str,
    campaign_id: &str,
    default_region: Option<&str>,
    options: &ImportOptions,
) -> Result<(Vec<KeyedRecord>, ImportReport), ImportError> {
    if sheet::is_workbook(bytes) {
        let (table, cell_errors, numeric_phones) =
            sheet::read(bytes, path, options.sheet.as_deref())?;
        let (records, mut report) = parse_table(
            table.header,
            table.rows.into_iter().map(Ok),
            path,
            campaign_id,
            default_region,
            options,
        )?;
        report.cell_errors = cell_errors;
        report.numeric_phones = numeric_phones;
        return Ok((records, report));
    }
    if let Some(sheet) = &options.sheet {
        return Err(ImportError::Read {
            path: path.into(),
            message: format!(
                "--sheet {sheet:?} is for a workbook (.xlsx, .xls, .ods), and this file is not one"
            ),
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_csv_with(text.as_bytes(), path, campaign_id, default_region, options),
        Err(e) => {
            let line = bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64
                + 1;
            let (text, _, _) = encoding_rs::WINDOWS_1252.decode(bytes);
            let (records, mut report) =
                parse_csv_with(text.as_bytes(), path, campaign_id, default_region, options)?;
            report.converted_from_latin1 = Some(line);
            Ok((records, report))
        }
    }
}

/// [`parse_csv`] with the separator and the state filter of `options`.
pub fn parse_csv_with(
    input: impl Read,
    path: &str,
    campaign_id: &str,
    default_region: Option<&str>,
    options: &ImportOptions,
) -> Result<(Vec<KeyedRecord>, ImportReport), ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .delimiter(options.delimiter)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ImportError::Read {
            path: path.into(),
            message: e.to_string(),
        })?
        .clone();
    let rows = reader.into_records().map(|row| {
        let row = row.map_err(|e| ImportError::Csv {
            path: path.into(),
            line: e.position().map_or(0, |p| p.line()),
            message: e.to_string(),
        })?;
        Ok((row.position().map_or(0, |p| p.line()), row))
    });
    parse_table(
        headers.iter().map(str::to_string).collect(),
        rows,
        path,
        campaign_id,
        default_region,
        options,
    )
}

/// The rows of a table (a CSV file or a sheet), each with the line (or
/// row) number the user sees, turned into keyed records and checked.
fn parse_table(
    header: Vec<String>,
    rows: impl Iterator<Item = Result<(u64, csv::StringRecord), ImportError>>,
    path: &str,
    campaign_id: &str,
    default_region: Option<&str>,
    options: &ImportOptions,
) -> Result<(Vec<KeyedRecord>, ImportReport), ImportError> {
    let columns: Vec<String> = header
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let repeated: std::collections::BTreeSet<&str> = columns
        .iter()
        .filter(|c| !c.is_empty() && !seen.insert(c.as_str()))
        .map(String::as_str)
        .collect();
    if !repeated.is_empty() {
        return Err(ImportError::DuplicateColumns {
            path: path.into(),
            columns: repeated.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    if !columns
        .iter()
        .any(|c| c == "phone" || c == "user_id" || c == "contact")
    {
        let one = columns.len() == 1;
        let hint = match (one, columns.first()) {
            (true, Some(c)) if c.contains(';') => {
                " — the columns look separated by ';': add --delimiter ';'".to_string()
            }
            (true, Some(c)) if c.contains('\t') => {
                " — the columns look separated by tabs: add --delimiter tab".to_string()
            }
            _ if path.to_ascii_lowercase().ends_with(".xlsx")
                || path.to_ascii_lowercase().ends_with(".xls") =>
            {
                " — the file is named like a workbook but is not one, so it was read as CSV: export it again from the spreadsheet".to_string()
            }
            _ => String::new(),
        };
        return Err(ImportError::NoContactColumn {
            path: path.into(),
            found: columns.join(",").chars().take(200).collect(),
            hint,
        });
    }
    // A `report` export read back: its `state` column filters the rows.
    let state_column = columns.iter().position(|c| c == "state");
    let mut report = ImportReport::default();
    let mut out = Vec::new();
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for row in rows {
        let (line, row) = row?;
        report.rows += 1;
        if let (Some(i), false) = (state_column, options.states.is_empty()) {
            let state = row.get(i).unwrap_or_default();
            if !options.states.iter().any(|s| s.eq_ignore_ascii_case(state)) {
                report.other_state += 1;
                continue;
            }
        }
        let record = row_record(campaign_id, &columns, &row);
        let Some(key) = row_key(&record, default_region, line, &mut report) else {
            continue;
        };
        // A triggered campaign's contact comes once per occurrence.
        let key = match record.occurrence.as_deref() {
            Some(occurrence) => format!("{key}\u{1f}{occurrence}"),
            None => key,
        };
        if let Some(first) = first_line.get(&key) {
            report.duplicates.push((line, *first));
        } else {
            first_line.insert(key.clone(), line);
        }
        out.push(KeyedRecord { line, key, record });
    }
    Ok((out, report))
}

/// The audience record of one row: the contact columns by name, `tags`
/// split on `;` (`name=value` items are valued tags), every other column a
/// variable; empty cells left out.
fn row_record(campaign_id: &str, columns: &[String], row: &csv::StringRecord) -> AudienceRecord {
    let mut record = AudienceRecord {
        campaign_id: campaign_id.to_string(),
        contact: ContactInfo::default(),
        variables: Default::default(),
        tags: Default::default(),
        send_after: None,
        occurrence: None,
        event_at: None,
        event: None,
    };
    for (column, value) in columns.iter().zip(row.iter()) {
        let value = unescape_cell(value);
        if value.is_empty() {
            continue;
        }
        match column.as_str() {
            // A report's contact: a user id, else a phone.
            "contact" if crate::domain::is_bsuid(value) => {
                record.contact.user_id = Some(value.to_string())
            }
            "contact" => record.contact.phone = Some(value.to_string()),
            "phone" => record.contact.phone = Some(value.to_string()),
            "user_id" => record.contact.user_id = Some(value.to_string()),
            "name" => record.contact.name = Some(value.to_string()),
            "timezone" => record.contact.timezone = Some(value.to_string()),
            "send_after" => record.send_after = Some(value.to_string()),
            "occurrence" => record.occurrence = Some(value.to_string()),
            "event_at" => record.event_at = Some(value.to_string()),
            "tags" => record.tags = crate::domain::Tags::from_cell(value),
            // A report's frozen parameters (`report --with-variables`): its
            // named ones are variables again.
            "variables" => {
                for (name, v) in value.split("; ").filter_map(|item| item.split_once('=')) {
                    let named = !name.is_empty()
                        && !name.contains('.')
                        && !name.bytes().all(|b| b.is_ascii_digit());
                    if named && !record.variables.contains_key(name) {
                        record.variables.insert(name.to_string(), v.to_string());
                    }
                }
            }
            other if is_report_column(other) => {}
            other => {
                record
                    .variables
                    .insert(other.to_string(), value.to_string());
            }
        }
    }
    record
}

/// A cell as written before a spreadsheet-safe export escaped it: the
/// leading `'` of a cell that starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return is dropped.
fn unescape_cell(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

/// The Kafka key of a row: its phone in E.164 (an invalid phone is reported
/// and kept as written, so ingest excludes it visibly), else its user id;
/// `None`, reported, for a row with neither.
fn row_key(
    record: &AudienceRecord,
    default_region: Option<&str>,
    line: u64,
    report: &mut ImportReport,
) -> Option<String> {
    match (&record.contact.phone, &record.contact.user_id) {
        // A phone column holds phones: "not-a-phone" is an invalid phone,
        // not a business-scoped user id.
        (Some(phone), _) => match crate::domain::normalize_phone(phone, default_region) {
            Ok(k) => Some(k.as_str().to_string()),
            Err(e) => {
                report.invalid_phone.push(RowProblem {
                    line,
                    message: e.to_string(),
                });
                Some(phone.clone())
            }
        },
        (None, Some(user_id)) => Some(user_id.clone()),
        (None, None) => {
            report.missing_contact.push(RowProblem {
                line,
                message: "no phone and no user_id".into(),
            });
            None
        }
    }
}

/// Produces the records to `topic`, waiting for every delivery report.
pub async fn produce(
    records: &[KeyedRecord],
    brokers: &str,
    topic: &str,
    extra: &[(String, String)],
    progress: Option<&ProgressBar>,
) -> Result<u64, ImportError> {
    let mut cfg = client_config(brokers, extra);
    cfg.set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", "60000");
    let producer: FutureProducer = cfg
        .create()
        .map_err(|e| ImportError::Kafka(e.to_string()))?;
    let mut produced = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    for chunk in records.chunks(IN_FLIGHT) {
        let payloads = chunk
            .iter()
            .map(|r| serde_json::to_vec(&r.record))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ImportError::Kafka(e.to_string()))?;
        let mut deliveries = Vec::with_capacity(chunk.len());
        for (r, payload) in chunk.iter().zip(&payloads) {
            let record = FutureRecord::to(topic).key(&r.key).payload(payload);
            deliveries.push(producer.send(record, Duration::from_secs(60)));
        }
        for d in futures::future::join_all(deliveries).await {
            match d {
                Ok(_) => produced += 1,
                Err((e, _)) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
            if let Some(pb) = progress {
                pb.inc(1);
            }
        }
    }
    let _ = producer.flush(Duration::from_secs(30));
    match first_error {
        Some(first) => Err(ImportError::Undelivered { failed, first }),
        None => Ok(produced),
    }
}

/// A progress bar for `n` records (hidden when stderr is not a terminal).
pub fn progress_bar(n: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "phone,name,coupon\n\
        +52 55 1234 5678,Ana,A1\n\
        ,Nobody,N1\n\
        12345,Bad,B1\n\
        +525512345678,Ana again,A2\n\
        +52 55 8765 4321,Luis,\n";

    #[test]
    fn rows_are_validated_with_line_numbers() {
        let (records, report) = parse_csv(CSV.as_bytes(), "a.csv", "c1", None).unwrap();
        assert_eq!(report.rows, 5);
        assert_eq!(records.len(), 4, "the row without phone is not produced");
        assert_eq!(report.missing_contact.len(), 1);
        assert_eq!(report.missing_contact[0].line, 3);
        assert_eq!(report.invalid_phone.len(), 1);
        assert_eq!(report.invalid_phone[0].line, 4);
        assert_eq!(report.duplicates, vec![(5, 2)]);
        assert_eq!(records[0].key, "+525512345678");
        assert_eq!(
            records[0]
                .record
                .variables
                .get("coupon")
                .map(String::as_str),
            Some("A1")
        );
        assert_eq!(records[0].record.contact.name.as_deref(), Some("Ana"));
        // An empty cell is an absent variable, not an empty string.
        assert!(!records[3].record.variables.contains_key("coupon"));
    }

    #[test]
    fn the_tags_cell_holds_labels_and_valued_tags() {
        let csv = "phone,tags\n+52 55 1234 5678,vip; customer_id=C-1\n";
        let (records, _) = parse_csv(csv.as_bytes(), "t.csv", "c1", None).unwrap();
        let tags = &records[0].record.tags;
        assert_eq!(tags.labels, ["vip"]);
        assert_eq!(
            tags.values.get("customer_id").map(String::as_str),
            Some("C-1")
        );
        let json = serde_json::to_value(&records[0].record).unwrap();
        assert_eq!(
            json["tags"],
            serde_json::json!(["vip", {"customer_id": "C-1"}])
        );
    }

    #[test]
    fn latin1_is_read_and_said_with_its_line() {
        // "José" and "María" as Excel writes them in Windows-1252.
        let bytes = b"phone;name\n+52 55 1234 5678;Jos\xe9\n+52 55 8765 4321;Mar\xeda\n";
        let options = ImportOptions {
            delimiter: b';',
            ..Default::default()
        };
        let (records, report) = parse_bytes(bytes, "l.csv", "c1", None, &options).unwrap();
        assert_eq!(report.converted_from_latin1, Some(2));
        assert_eq!(records[0].record.contact.name.as_deref(), Some("José"));
        assert_eq!(records[1].record.contact.name.as_deref(), Some("María"));
        assert!(report.render(5).contains("first at line 2"));
        // UTF-8 with Excel's byte-order mark.
        let bom = b"\xEF\xBB\xBFphone,name\n+52 55 1234 5678,Jos\xc3\xa9\n";
        let (records, report) = parse_bytes(bom, "u.csv", "c1", None, &Default::default()).unwrap();
        assert_eq!(report.converted_from_latin1, None);
        assert_eq!(records[0].record.contact.name.as_deref(), Some("José"));
    }

    #[test]
    fn headers_are_named_once_and_separators_are_hinted() {
        let err =
            parse_csv("phone,name,Name\n1,a,b\n".as_bytes(), "d.csv", "c1", None).unwrap_err();
        assert!(
            err.to_string().contains("names name more than once"),
            "{err}"
        );
        let err = parse_csv("phone;name\n+5255;a\n".as_bytes(), "s.csv", "c1", None).unwrap_err();
        assert!(err.to_string().contains("--delimiter ';'"), "{err}");
        // A CSV named like a workbook, and a broken workbook.
        let err = parse_csv("name\nAna\n".as_bytes(), "a.xlsx", "c1", None).unwrap_err();
        assert!(err.to_string().contains("named like a workbook"), "{err}");
        let options = ImportOptions::default();
        let err = parse_bytes(b"PK\x03\x04garbage", "b.csv", "c1", None, &options).unwrap_err();
        assert!(
            err.to_string().contains("not a workbook that can be read"),
            "{err}"
        );
    }

    #[test]
    fn a_report_reads_back_as_an_audience() {
        // The columns of `report`, spreadsheet-escaped as it writes them.
        let csv = "contact,occurrence,name,tags,template,language,state,reason,error_code,message,provider_message,wamid,variables\n\
            '+525512345678,,Ana,vip,promo,es_MX,failed,contact,131026,not a WhatsApp user,Message undeliverable.,wamid.1,name=Ana; coupon=A=1; 1=x; header.1=h\n\
            US.1349,,,,promo,es_MX,excluded,missing_variable:coupon,,missing variable value: coupon,,,\n\
            +525587654321,,,,promo,es_MX,delivered,,,,,wamid.3,\n";
        let options = ImportOptions {
            states: vec!["failed".into(), "excluded".into()],
            ..Default::default()
        };
        let (records, report) =
            parse_csv_with(csv.as_bytes(), "r.csv", "again", None, &options).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(report.other_state, 1);
        assert_eq!(
            records[0].key, "+525512345678",
            "the export's quote is taken off"
        );
        assert_eq!(records[0].record.tags.labels, ["vip"]);
        assert_eq!(records[0].record.contact.name.as_deref(), Some("Ana"));
        let variables: Vec<(&str, &str)> = records[0]
            .record
            .variables
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            variables,
            [("coupon", "A=1"), ("name", "Ana")],
            "named frozen parameters are variables again; report columns are not"
        );
        assert_eq!(
            records[1].record.contact.user_id.as_deref(),
            Some("US.1349")
        );
        assert!(report
            .render(5)
            .contains("rows of other states left out (--state): 1"));
    }

    #[test]
    fn every_problem_can_be_written_out() {
        let dir = tempfile::tempdir().unwrap();
        let (_, report) = parse_csv(CSV.as_bytes(), "a.csv", "c1", None).unwrap();
        let out = dir.path().join("p.csv");
        assert_eq!(report.write_problems(&out).unwrap(), 3);
        let text = std::fs::read_to_string(out).unwrap();
        assert!(text.starts_with("line,problem\n3,skipped"), "{text}");
        assert!(
            text.contains("5,duplicate contact: same as line 2"),
            "{text}"
        );
    }

    #[test]
    fn a_file_without_a_contact_column_is_refused() {
        let err = parse_csv("name,coupon\nAna,A1\n".as_bytes(), "x.csv", "c1", None).unwrap_err();
        assert!(
            err.to_string()
                .contains("no `phone`, `user_id` or `contact` column"),
            "{err}"
        );
    }

    #[test]
    fn report_lists_lines() {
        let (_, report) = parse_csv(CSV.as_bytes(), "a.csv", "c1", None).unwrap();
        let text = report.render(10);
        assert!(text.contains("line 3: no phone and no user_id"), "{text}");
        assert!(text.contains("line 5: same contact as line 2"), "{text}");
    }
}
