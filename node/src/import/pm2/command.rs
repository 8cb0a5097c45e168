//! A PM2 app's `script`, interpreter and arguments as herd's `command` and `args`.

use super::Keys;
use super::values::{string, words};
use crate::import::{Draft, Import};
use serde_json::Value;
use std::path::Path;

/// `script` with its interpreter, as PM2 picks it, becomes `command` and `args`.
pub(super) fn command(
    d: &mut Draft,
    imp: &mut Import,
    origin: &str,
    script: &str,
    cwd: &Path,
    keys: &Keys,
) -> anyhow::Result<()> {
    let take = |key: &str| keys.take(key);
    let source = imp.source.display().to_string();
    let list = |key: &str, v: &Value| {
        words(v).ok_or_else(|| {
            anyhow::anyhow!(
                "{source}: {origin}: key `{key}`: must be a string or a list of strings"
            )
        })
    };
    let interpreter = match take("interpreter").or_else(|| take("exec_interpreter")) {
        Some(v) => Some(string(v).ok_or_else(|| {
            anyhow::anyhow!("{source}: {origin}: key `interpreter`: must be a string")
        })?),
        None => None,
    };
    let interpreter_args = match take("interpreter_args").or_else(|| take("node_args")) {
        Some(v) => list("interpreter_args", v)?,
        None => Vec::new(),
    };
    let args = match take("args") {
        Some(v) => list("args", v)?,
        None => Vec::new(),
    };
    let by_extension = Path::new(script)
        .extension()
        .and_then(|e| e.to_str())
        .and_then(interpreter_for);
    let (program, note) = match interpreter.as_deref() {
        Some("none") => (None, None),
        Some(i) => (Some(i.to_string()), None),
        None => match by_extension {
            Some(i) => (
                Some(i.to_string()),
                Some(format!("pm2 runs {script} with {i}")),
            ),
            None => (None, None),
        },
    };
    let (cmd, all_args) = match program {
        Some(p) => {
            let mut all = interpreter_args;
            all.push(script.to_string());
            all.extend(args);
            (p, all)
        }
        None => {
            if !interpreter_args.is_empty() {
                imp.skip(
                    origin,
                    "interpreter_args",
                    "the script runs without an interpreter, so there is none to pass them to",
                );
            }
            // PM2 finds a bare script name in cwd before PATH; herd looks up a name
            // without a `/` on PATH.
            let local = !script.contains('/') && cwd.join(script).is_file();
            let cmd = if local {
                format!("./{script}")
            } else {
                script.to_string()
            };
            (cmd, args)
        }
    };
    let e = d.set("command", cmd, "script");
    if let Some(n) = note {
        e.note(n);
    }
    if !all_args.is_empty() {
        d.set(
            "args",
            toml::Value::Array(all_args.into_iter().map(toml::Value::String).collect()),
            "args",
        );
    }
    Ok(())
}

/// PM2's interpreter for a script's extension (lib/API/interpreter.json); others run as is.
fn interpreter_for(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "js" | "cjs" | "mjs" => "node",
        "ts" | "tsx" => "bun",
        "coffee" => "coffee",
        "ls" => "lsc",
        "sh" => "bash",
        // PM2 says `python`, which current distributions no longer install.
        "py" => "python3",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        _ => return None,
    })
}
