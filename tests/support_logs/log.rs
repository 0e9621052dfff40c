//! A log as the service wrote it, read line by line in either format, so that
//! the checks ask for a line's level, target, message or field and never care
//! whether it was text or JSON.

use std::path::PathBuf;

use super::Format;

pub struct Log {
    pub format: Format,
    pub lines: Vec<String>,
    /// The file the service wrote (stderr), for fail2ban-regex.
    pub path: PathBuf,
    pub stdout: String,
    /// The service's own address, which the `listening` line names.
    pub listen: String,
    /// The run's directory (data included), kept alive with the log.
    pub dir: Option<tempfile::TempDir>,
}

impl Log {
    pub fn json(line: &str) -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// A top-level string of a JSON line.
    fn json_str(line: &str, key: &str) -> String {
        Log::json(line)[key].as_str().unwrap().to_owned()
    }

    /// The `n`th word of a text line: `<time> <LEVEL> <target>: <message> <fields>`.
    fn word(line: &str, n: usize) -> &str {
        line.split_whitespace().nth(n).unwrap()
    }

    pub fn level(&self, line: &str) -> String {
        match self.format {
            Format::Json => Log::json_str(line, "level"),
            Format::Text => Log::word(line, 1).to_owned(),
        }
    }

    pub fn target(&self, line: &str) -> String {
        match self.format {
            Format::Json => Log::json_str(line, "target"),
            Format::Text => Log::word(line, 2).trim_end_matches(':').to_owned(),
        }
    }

    /// The event's message, with the fields that follow it in text format.
    pub fn message(&self, line: &str) -> String {
        match self.format {
            Format::Json => Log::json_str(line, "message"),
            // The time has no ": ", so the first one ends the target.
            Format::Text => line.split_once(": ").unwrap().1.trim().to_owned(),
        }
    }

    pub fn is(&self, line: &str, message: &str) -> bool {
        let m = self.message(line);
        m == message || m.starts_with(&format!("{message} "))
    }

    /// A field's value, quotes removed (the text formatter quotes strings).
    pub fn field(&self, line: &str, name: &str) -> Option<String> {
        match self.format {
            Format::Json => Log::json(line).get(name).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            Format::Text => {
                let start = line.find(&format!(" {name}="))? + name.len() + 2;
                let value = line[start..].split(' ').next().unwrap();
                Some(value.trim_matches('"').to_owned())
            }
        }
    }

    pub fn with(&self, message: &str) -> Vec<&String> {
        self.lines.iter().filter(|l| self.is(l, message)).collect()
    }

    pub fn dump(&self) -> String {
        self.lines.join("\n")
    }

    /// The same log with other lines and without its directory (for altered copies).
    pub fn with_lines(&self, lines: Vec<String>) -> Log {
        Log {
            format: self.format,
            lines,
            path: self.path.clone(),
            stdout: self.stdout.clone(),
            listen: self.listen.clone(),
            dir: None,
        }
    }
}
