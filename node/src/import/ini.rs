//! INI as Python's `configparser` reads it for supervisord: `[section]` headers, `key = value`
//! or `key: value`, keys case-insensitive, comments on lines starting with `;` or `#` and after
//! ` ;` inside a line, indented lines continuing the previous value.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// The 1-based line of the header, for errors.
    pub line: usize,
    /// Keys lower-cased, in file order; a key given twice keeps its last value.
    pub entries: Vec<(String, String)>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IniError {
    pub line: usize,
    pub why: String,
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

pub fn parse(text: &str) -> Result<Vec<Section>, IniError> {
    let mut sections: Vec<Section> = Vec::new();
    // The key whose value an indented line continues.
    let mut open: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            // configparser keeps empty lines inside a multi-line value; supervisord never
            // cares, and a comment line does not end the value either.
            continue;
        }
        let value = strip_inline_comment(raw);
        if raw.starts_with([' ', '\t'])
            && let (Some(key), Some(section)) = (&open, sections.last_mut())
        {
            let entry = section
                .entries
                .iter_mut()
                .rfind(|(k, _)| k == key)
                .expect("the open key is in the section");
            if !entry.1.is_empty() {
                entry.1.push('\n');
            }
            entry.1.push_str(value.trim());
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(IniError {
                    line,
                    why: format!("`{trimmed}` opens a section but has no closing `]`"),
                });
            };
            let name = name.trim().to_string();
            if sections.iter().any(|s| s.name == name) {
                return Err(IniError {
                    line,
                    why: format!("section [{name}] appears twice; merge the two"),
                });
            }
            sections.push(Section {
                name,
                line,
                entries: Vec::new(),
            });
            open = None;
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(IniError {
                line,
                why: "a key before any [section] header".into(),
            });
        };
        let Some(split) = value.find(['=', ':']) else {
            return Err(IniError {
                line,
                why: format!(
                    "`{}` is neither a [section] nor `key = value`",
                    value.trim()
                ),
            });
        };
        let key = value[..split].trim().to_ascii_lowercase();
        let val = value[split + 1..].trim().to_string();
        section.entries.retain(|(k, _)| *k != key);
        section.entries.push((key.clone(), val));
        open = Some(key);
    }
    Ok(sections)
}

/// `value ; comment` loses the comment; a `;` not preceded by whitespace stays.
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b';' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_keys_comments_and_continuations() {
        let text = "; a comment\n[program:web]\nCommand = python3 -m http.server ; inline\n\
                    environment = A=\"1\",\n    B=2\n# another\nurl=http://x;y\nstartsecs: 5\n\n[group:g]\nprograms=web\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "program:web");
        assert_eq!(s[0].get("command"), Some("python3 -m http.server"));
        assert_eq!(s[0].get("environment"), Some("A=\"1\",\nB=2"));
        assert_eq!(s[0].get("url"), Some("http://x;y"));
        assert_eq!(s[0].get("startsecs"), Some("5"));
        assert_eq!(s[1].get("programs"), Some("web"));
        assert_eq!(s[1].line, 10);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("x = 1\n").unwrap_err().line, 1);
        let e = parse("[a]\nx = 1\n[a]\n").unwrap_err();
        assert_eq!(
            (e.line, e.why.as_str()),
            (3, "section [a] appears twice; merge the two")
        );
        assert!(parse("[a\n").unwrap_err().why.contains("no closing"));
        assert!(parse("[a]\njunk\n").unwrap_err().why.contains("neither"));
    }
}
