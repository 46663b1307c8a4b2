//! Reading `(id, url)` records from CSV, JSON Lines or plain URL lists.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

/// One input record: the caller's id (an article id, say) and the image URL it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The caller's identifier, copied to the output unchanged.
    pub id: String,
    /// The image URL as written in the input (checked after parsing).
    pub url: String,
}

impl Record {
    /// A record from an id and a URL.
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        Record {
            id: id.into(),
            url: url.into(),
        }
    }
}

/// How the input is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InputFormat {
    /// Decide from the file extension, else from the first non-blank line: `{` means JSON
    /// Lines, a comma means CSV, anything else plain URLs.
    #[default]
    Auto,
    /// CSV; the id and URL columns are found by header name or given by number.
    Csv,
    /// One JSON object per line with the id and URL as fields.
    Jsonl,
    /// One URL per line; the id is the line number. Blank lines and `#` comments are skipped.
    Lines,
}

/// Where to find the id and the URL in each record.
#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// The layout.
    pub format: InputFormat,
    /// The id column (CSV header name or 1-based number) or JSON field; default `id`, and for
    /// CSV without that column the row number.
    pub id_column: Option<String>,
    /// The URL column (CSV header name or 1-based number) or JSON field; default `url`.
    pub url_column: Option<String>,
    /// The CSV has no header row; columns are then numbers (defaults: id 1, URL 2).
    pub no_header: bool,
}

/// The input could not be read as records; nothing was checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// Reading failed.
    #[error("cannot read the input: {0}")]
    Io(#[from] std::io::Error),
    /// The CSV is malformed.
    #[error("malformed CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A JSON Lines line is not a JSON object.
    #[error(
        "line {line} is not a JSON object ({reason}): fix the line or choose another --input-format"
    )]
    Json {
        /// 1-based line number.
        line: usize,
        /// What the parser said.
        reason: String,
    },
    /// A named column is not in the CSV header.
    #[error(
        "column `{name}` not found in the CSV header {header:?}: name it with --{flag} (a header name or a 1-based number)"
    )]
    MissingColumn {
        /// The column asked for.
        name: String,
        /// The header that was found.
        header: Vec<String>,
        /// The flag that names this column.
        flag: &'static str,
    },
    /// A column number is not a positive number.
    #[error(
        "column `{value}` for --{flag} must be a 1-based column number when the CSV has no header"
    )]
    BadColumnNumber {
        /// The value given.
        value: String,
        /// The flag that named it.
        flag: &'static str,
    },
}

/// Reads every record from `reader`. `name` (a file path) helps [`InputFormat::Auto`] decide.
pub fn read_records(
    mut reader: impl Read,
    name: Option<&Path>,
    options: &InputOptions,
) -> Result<Vec<Record>, InputError> {
    let mut text = String::new();
    reader.read_to_string(&mut text)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    match resolve_format(options.format, name, text) {
        InputFormat::Csv => read_csv(text, options),
        InputFormat::Jsonl => read_jsonl(text, options),
        _ => Ok(read_lines(text)),
    }
}

fn resolve_format(format: InputFormat, name: Option<&Path>, text: &str) -> InputFormat {
    if format != InputFormat::Auto {
        return format;
    }
    let ext = name
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => return InputFormat::Csv,
        Some("jsonl" | "ndjson" | "json") => return InputFormat::Jsonl,
        Some("txt") => return InputFormat::Lines,
        _ => {}
    }
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    match first {
        Some(line) if line.starts_with('{') => InputFormat::Jsonl,
        Some(line) if line.contains(',') || line.eq_ignore_ascii_case("url") => InputFormat::Csv,
        _ => InputFormat::Lines,
    }
}

fn read_lines(text: &str) -> Vec<Record> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            (!line.is_empty() && !line.starts_with('#'))
                .then(|| Record::new((i + 1).to_string(), line))
        })
        .collect()
}

fn read_jsonl(text: &str, options: &InputOptions) -> Result<Vec<Record>, InputError> {
    let id_key = options.id_column.as_deref().unwrap_or("id");
    let url_key = options.url_column.as_deref().unwrap_or("url");
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| InputError::Json {
            line: i + 1,
            reason: e.to_string(),
        })?;
        let Value::Object(object) = value else {
            return Err(InputError::Json {
                line: i + 1,
                reason: "not an object".to_string(),
            });
        };
        let id = match object.get(id_key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => (i + 1).to_string(),
            Some(other) => other.to_string(),
        };
        // A missing URL field becomes an empty URL, reported as `invalid_url` for this id.
        let url = match object.get(url_key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        records.push(Record { id, url });
    }
    Ok(records)
}

/// Where a column is: by index, or absent (then the row number is the id).
fn column_index(
    spec: Option<&str>,
    default_name: &str,
    default_number: usize,
    header: Option<&[String]>,
    flag: &'static str,
) -> Result<Option<usize>, InputError> {
    let as_number = |s: &str| s.parse::<usize>().ok().filter(|n| *n >= 1).map(|n| n - 1);
    match (header, spec) {
        (None, None) => Ok(Some(default_number - 1)),
        (None, Some(s)) => as_number(s).map(Some).ok_or(InputError::BadColumnNumber {
            value: s.to_string(),
            flag,
        }),
        (Some(header), spec) => {
            let name = spec.unwrap_or(default_name);
            if let Some(i) = header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name))
            {
                return Ok(Some(i));
            }
            if let Some(n) = as_number(name) {
                return Ok(Some(n));
            }
            if spec.is_none() && flag == "id-column" {
                return Ok(None);
            }
            Err(InputError::MissingColumn {
                name: name.to_string(),
                header: header.to_vec(),
                flag,
            })
        }
    }
}

fn read_csv(text: &str, options: &InputOptions) -> Result<Vec<Record>, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(!options.no_header)
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Option<Vec<String>> = if options.no_header {
        None
    } else {
        Some(reader.headers()?.iter().map(str::to_string).collect())
    };
    let id_col = column_index(
        options.id_column.as_deref(),
        "id",
        1,
        header.as_deref(),
        "id-column",
    )?;
    let url_col = column_index(
        options.url_column.as_deref(),
        "url",
        2,
        header.as_deref(),
        "url-column",
    )?
    .expect("the URL column is always required");
    let mut records = Vec::new();
    for (row, result) in reader.records().enumerate() {
        let row_data = result?;
        let id = match id_col {
            Some(i) => row_data.get(i).unwrap_or("").to_string(),
            None => (row + 1).to_string(),
        };
        let url = row_data.get(url_col).unwrap_or("").trim().to_string();
        records.push(Record { id, url });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, options: &InputOptions) -> Vec<Record> {
        read_records(text.as_bytes(), None, options).unwrap()
    }

    #[test]
    fn csv_with_header_in_any_column_order() {
        let got = read(
            "url,title,id\nhttp://a/x.png,t,7\n\"http://b/y.png\",u,8\n",
            &InputOptions::default(),
        );
        assert_eq!(
            got,
            vec![
                Record::new("7", "http://a/x.png"),
                Record::new("8", "http://b/y.png")
            ]
        );
    }

    #[test]
    fn csv_with_named_and_numbered_columns() {
        let options = InputOptions {
            format: InputFormat::Csv,
            id_column: Some("article".into()),
            url_column: Some("3".into()),
            ..Default::default()
        };
        let got = read("article,x,image\n1,_,http://a/x.png\n", &options);
        assert_eq!(got, vec![Record::new("1", "http://a/x.png")]);
    }

    #[test]
    fn csv_without_header() {
        let options = InputOptions {
            format: InputFormat::Csv,
            no_header: true,
            ..Default::default()
        };
        let got = read("1,http://a/x.png\n2,http://b/y.png\n", &options);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Record::new("2", "http://b/y.png"));
    }

    #[test]
    fn csv_missing_url_column_is_an_error_naming_the_flag() {
        let err = read_records(
            "id,image\n1,x\n".as_bytes(),
            None,
            &InputOptions {
                format: InputFormat::Csv,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("--url-column"), "{err}");
    }

    #[test]
    fn jsonl_with_numeric_ids_and_missing_url() {
        let got = read(
            "{\"id\": 5, \"url\": \"http://a/x.png\"}\n\n{\"id\": \"b\"}\n",
            &InputOptions::default(),
        );
        assert_eq!(
            got,
            vec![Record::new("5", "http://a/x.png"), Record::new("b", "")]
        );
    }

    #[test]
    fn jsonl_garbage_names_the_line() {
        let err = read_records(
            "{\"url\": \"http://a\"}\n{oops\n".as_bytes(),
            Some(Path::new("x.jsonl")),
            &InputOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, InputError::Json { line: 2, .. }), "{err}");
    }

    #[test]
    fn plain_lines_use_line_numbers_and_skip_comments() {
        let got = read(
            "# images\nhttp://a/x.png\n\n  http://b/y.png  \n",
            &InputOptions::default(),
        );
        assert_eq!(
            got,
            vec![
                Record::new("2", "http://a/x.png"),
                Record::new("4", "http://b/y.png")
            ]
        );
    }
}
