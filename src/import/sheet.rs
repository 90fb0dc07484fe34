//! Workbooks (`.xlsx`, `.xls`, `.ods`) read as tables: the first row of the
//! sheet is the header, and each cell is turned into the text a CSV export
//! of the same sheet would hold.

use calamine::{Data, Reader};

use super::{ImportError, RowProblem};

/// A sheet as a header and its rows, each with the row number the
/// spreadsheet shows.
pub(super) struct Table {
    pub header: Vec<String>,
    pub rows: Vec<(u64, csv::StringRecord)>,
}

/// A zip archive (`.xlsx`, `.ods`) or an OLE compound file (`.xls`).
pub(super) fn is_workbook(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1")
}

/// Reads `sheet` (default: the first) of the workbook in `bytes`. Cells
/// holding a formula error are read as empty and listed with their cell;
/// the phones held as numbers are counted (a number loses its `+`).
pub(super) fn read(
    bytes: &[u8],
    path: &str,
    sheet: Option<&str>,
) -> Result<(Table, Vec<RowProblem>, u64), ImportError> {
    let unreadable = |message: String| ImportError::Read {
        path: path.into(),
        message,
    };
    let mut book = calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes.to_vec()))
        .map_err(|e| {
            unreadable(format!(
                "not a workbook that can be read ({e}); save it again as .xlsx, or as CSV (UTF-8)"
            ))
        })?;
    let names = book.sheet_names();
    let name = match sheet {
        Some(wanted) => names
            .iter()
            .find(|n| n.as_str() == wanted)
            .or_else(|| names.iter().find(|n| n.eq_ignore_ascii_case(wanted)))
            .cloned()
            .ok_or_else(|| {
                unreadable(format!(
                    "has no sheet {wanted:?}; its sheets are: {}",
                    names.join(", ")
                ))
            })?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| unreadable("the workbook has no sheet".into()))?,
    };
    let range = book
        .worksheet_range(&name)
        .map_err(|e| unreadable(format!("sheet {name:?} cannot be read: {e}")))?;
    // The range starts at the first used cell: row numbers count from the
    // sheet's first row, as the spreadsheet shows them.
    let (first_row, first_col) = range.start().unwrap_or((0, 0));
    let mut rows = range.rows();
    let Some(header_cells) = rows.next() else {
        return Err(unreadable(format!(
            "sheet {name:?} is empty: the first row must name the columns (phone, name, …)"
        )));
    };
    let mut cell_errors = Vec::new();
    let mut numeric_phones = 0u64;
    let header: Vec<String> = header_cells.iter().map(|c| cell_text(c, "")).collect();
    let mut out = Vec::with_capacity(range.height().saturating_sub(1));
    for (i, cells) in rows.enumerate() {
        let row_number = u64::from(first_row) + i as u64 + 2;
        if cells.iter().all(|c| matches!(c, Data::Empty)) {
            continue;
        }
        let texts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let column = header.get(j).map(String::as_str).unwrap_or_default();
                let cell = || format!("{}{row_number}", column_letters(first_col + j as u32));
                if matches!(c, Data::Int(_) | Data::Float(_))
                    && column.eq_ignore_ascii_case("phone")
                {
                    numeric_phones += 1;
                }
                if let Data::Error(e) = c {
                    cell_errors.push(RowProblem {
                        line: row_number,
                        message: format!("cell {} ({column}) holds {e}", cell()),
                    });
                }
                cell_text(c, column)
            })
            .collect();
        out.push((row_number, csv::StringRecord::from(texts)));
    }
    Ok((Table { header, rows: out }, cell_errors, numeric_phones))
}

/// A cell as the text a CSV export of the sheet holds. Whole numbers lose
/// their `.0` (a phone typed as a number is `5215512345678`, not
/// `5.215512345678e12`); dates are ISO 8601, with the time for the
/// columns that are instants (`send_after`, `event_at`) or when the cell
/// has one.
fn cell_text(cell: &Data, column: &str) -> String {
    match cell {
        Data::Empty | Data::Error(_) => String::new(),
        Data::String(s) => s.trim().to_string(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(d) => match d.as_datetime() {
            Some(t) => {
                let instant = matches!(
                    column.to_ascii_lowercase().as_str(),
                    "send_after" | "event_at"
                );
                if instant || t.time() != chrono::NaiveTime::MIN {
                    t.format("%Y-%m-%dT%H:%M:%S").to_string()
                } else {
                    t.format("%Y-%m-%d").to_string()
                }
            }
            None => d.as_f64().to_string(),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
    }
}

/// The spreadsheet's name of a 0-based column: A … Z, AA, AB, …
fn column_letters(mut index: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_named_as_spreadsheets_name_them() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(27), "AB");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
    }

    #[test]
    fn cells_read_as_a_csv_export_writes_them() {
        assert_eq!(
            cell_text(&Data::Float(5215512345678.0), "phone"),
            "5215512345678"
        );
        assert_eq!(cell_text(&Data::Float(12.5), "amount"), "12.5");
        assert_eq!(cell_text(&Data::Int(7), "n"), "7");
        assert_eq!(cell_text(&Data::String("  Ana ".into()), "name"), "Ana");
        assert_eq!(cell_text(&Data::Bool(true), "vip"), "true");
        assert_eq!(cell_text(&Data::Empty, "x"), "");
    }
}
