//! Reading supervisord's configuration: the main file plus every file its `[include]`
//! sections pull in (globs relative to the including file), and the `%(name)s` expansions.

use crate::import::ini::{self, Section};
use anyhow::{Context, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A section and the file it came from (`%(here)s` is that file's directory).
#[derive(Debug, Clone)]
pub struct Located {
    pub file: PathBuf,
    pub section: Section,
}

impl Located {
    pub fn here(&self) -> String {
        self.file
            .parent()
            .unwrap_or(Path::new("/"))
            .display()
            .to_string()
    }
}

/// Includes deeper than this are a loop the canonical-path check did not catch.
const MAX_DEPTH: usize = 10;

pub fn load(path: &Path) -> anyhow::Result<Vec<Located>> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    read(&abs, &mut out, &mut seen, 0)?;
    for (i, a) in out.iter().enumerate() {
        if let Some(b) = out[..i].iter().find(|b| b.section.name == a.section.name) {
            bail!(
                "[{}] is defined in {} (line {}) and again in {} (line {}); keep one",
                a.section.name,
                b.file.display(),
                b.section.line,
                a.file.display(),
                a.section.line
            );
        }
    }
    Ok(out)
}

fn read(
    file: &Path,
    out: &mut Vec<Located>,
    seen: &mut BTreeSet<PathBuf>,
    depth: usize,
) -> anyhow::Result<()> {
    let canonical = file
        .canonicalize()
        .with_context(|| format!("cannot read {}", file.display()))?;
    if !seen.insert(canonical) || depth > MAX_DEPTH {
        // supervisord itself would read it twice and fail on duplicate sections; one copy
        // is what the user meant.
        return Ok(());
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let sections = ini::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    for section in sections {
        if section.name != "include" {
            out.push(Located {
                file: file.to_path_buf(),
                section,
            });
            continue;
        }
        let Some(files) = section.get("files") else {
            bail!(
                "{}: [include] (line {}) has no `files` key; supervisord needs `files = conf.d/*.conf`",
                file.display(),
                section.line
            );
        };
        let here = dir.display().to_string();
        let files = expand(files, &|name| match name {
            "here" => Some(here.clone()),
            _ => env_var(name),
        })
        .map_err(|e| anyhow::anyhow!("{}: [include] key `files`: {e}", file.display()))?;
        for pattern in files.split_whitespace() {
            let full = dir.join(pattern);
            let pattern_text = full.to_string_lossy();
            let mut matches: Vec<PathBuf> = glob::glob(&pattern_text)
                .with_context(|| {
                    format!(
                        "{}: [include] `{pattern}` is not a valid glob",
                        file.display()
                    )
                })?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            // supervisord reads includes in sorted order, so later files win the same way.
            matches.sort();
            for m in matches {
                read(&m, out, seen, depth + 1)?;
            }
        }
    }
    Ok(())
}

/// `%(ENV_X)s` reads this process's environment, as supervisord reads its own.
pub fn env_var(name: &str) -> Option<String> {
    name.strip_prefix("ENV_")
        .and_then(|v| std::env::var(v).ok())
}

/// Python's `%` formatting as supervisord applies it: `%(name)s`, `%(name)d`, `%(name)02d`,
/// and `%%` for a `%`.
pub fn expand(text: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('%') {
            out.push('%');
            rest = r;
            continue;
        }
        let Some(inner) = after.strip_prefix('(') else {
            return Err(format!(
                "a lone `%` in `{text}` (write `%%` for a percent sign)"
            ));
        };
        let Some(close) = inner.find(')') else {
            return Err(format!("`%(` without `)` in `{text}`"));
        };
        let name = &inner[..close];
        let spec = &inner[close + 1..];
        let conv_at = spec
            .find(|c: char| c.is_ascii_alphabetic())
            .ok_or_else(|| format!("`%({name})` has no conversion (add `s` or `d`)"))?;
        let (flags, conv) = (&spec[..conv_at], &spec[conv_at..conv_at + 1]);
        let value = vars(name).ok_or_else(|| match name.strip_prefix("ENV_") {
            Some(var) => format!("`%({name})s` needs the environment variable {var}, which is not set here; set it and import again"),
            None => format!("`%({name})s` is not a name supervisord expands here"),
        })?;
        out.push_str(
            &format_one(&value, flags, conv)
                .map_err(|why| format!("`%({name}){flags}{conv}`: {why}"))?,
        );
        rest = &spec[conv_at + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn format_one(value: &str, flags: &str, conv: &str) -> Result<String, String> {
    let zero = flags.starts_with('0');
    let left = flags.starts_with('-');
    let width: usize = flags
        .trim_start_matches(['0', '-', ' ', '+'])
        .parse()
        .unwrap_or(0);
    let body = match conv {
        "s" | "r" => value.to_string(),
        "d" | "i" => value
            .parse::<i64>()
            .map_err(|_| format!("`{value}` is not a number"))?
            .to_string(),
        other => {
            return Err(format!(
                "conversion `{other}` is not supported (use s or d)"
            ));
        }
    };
    Ok(match (left, zero) {
        (true, _) => format!("{body:<width$}"),
        (false, true) => format!("{body:0>width$}"),
        (false, false) => format!("{body:>width$}"),
    })
}

/// supervisord's `environment = A="1",B=2`: comma-separated, values optionally quoted.
pub fn environment(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut vars = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(vars);
        }
        let mut key = String::new();
        let mut has_value = false;
        for c in chars.by_ref() {
            if c == '=' {
                has_value = true;
                break;
            }
            key.push(c);
        }
        let key = key.trim().to_string();
        if !has_value || key.is_empty() || key.contains([',', ' ']) {
            return Err(format!("`{key}` is not KEY=value"));
        }
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        match chars.peek().copied() {
            Some(q @ ('"' | '\'')) => {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == q {
                        closed = true;
                        break;
                    }
                    if c == '\\'
                        && q == '"'
                        && let Some(n) = chars.next()
                    {
                        value.push(n);
                        continue;
                    }
                    value.push(c);
                }
                if !closed {
                    return Err(format!(
                        "the value of {key} opens a {q} quote and never closes it"
                    ));
                }
                // Whatever follows the closing quote up to the comma must be blank.
                let tail: String = chars.by_ref().take_while(|c| *c != ',').collect();
                if !tail.trim().is_empty() {
                    return Err(format!("`{}` after the quoted value of {key}", tail.trim()));
                }
            }
            _ => {
                let raw: String = chars.by_ref().take_while(|c| *c != ',').collect();
                value = raw.trim().to_string();
            }
        }
        vars.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "program_name" => Some("web".into()),
            "process_num" => Some("7".into()),
            "here" => Some("/etc/supervisor".into()),
            _ => None,
        }
    }

    #[test]
    fn python_formatting_as_supervisord_uses_it() {
        assert_eq!(
            expand(
                "%(program_name)s_%(process_num)02d at %(here)s 100%%",
                &vars
            )
            .unwrap(),
            "web_07 at /etc/supervisor 100%"
        );
        assert_eq!(expand("%(process_num)d", &vars).unwrap(), "7");
        assert!(
            expand("%(nope)s", &vars)
                .unwrap_err()
                .contains("not a name")
        );
        assert!(
            expand("%(ENV_HERD_NO_SUCH_VAR)s", &vars)
                .unwrap_err()
                .contains("environment variable HERD_NO_SUCH_VAR")
        );
        assert!(expand("50%", &vars).unwrap_err().contains("lone `%`"));
        assert!(
            expand("%(program_name)d", &vars)
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn environment_pairs_with_quotes_and_commas() {
        let v = environment("A=\"1,2\", B=plain ,C='x y',\nD=\"say \\\"hi\\\"\",E=").unwrap();
        let want = [
            ("A", "1,2"),
            ("B", "plain"),
            ("C", "x y"),
            ("D", "say \"hi\""),
            ("E", ""),
        ];
        assert_eq!(
            v,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
        assert!(
            environment("A=\"open")
                .unwrap_err()
                .contains("never closes")
        );
        assert!(
            environment("A=1,novalue")
                .unwrap_err()
                .contains("`novalue` is not KEY=value")
        );
    }
}
