//! Reads a PM2 ecosystem file into JSON: `.json` and `.yaml`/`.yml` directly, JavaScript
//! (`ecosystem.config.js`, `.cjs`, `.mjs`) by letting `node` evaluate it, since such files
//! compute their apps (`process.env`, `__dirname`, loops) and only node can run them.

use anyhow::{Context, bail};
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `node` may take to evaluate an ecosystem file (one that starts a server never ends).
const NODE_TIMEOUT: Duration = Duration::from_secs(20);

/// Separates the exports from anything the file itself prints while it is evaluated.
const MARKER: &str = "\n--herd-import-exports--\n";

/// `require`s the file (falling back to `import()` for an ES module), awaits a promise,
/// calls a function export, and prints the JSON after the marker.
const EVALUATE: &str = r#"
const file = process.argv[1];
(async () => {
  let m;
  try { m = require(file); }
  catch (e) {
    if (e && e.code === 'ERR_REQUIRE_ESM') { m = await import(require('url').pathToFileURL(file).href); }
    else throw e;
  }
  // An ES module's namespace (from import(), or require() of ESM on newer node).
  if (m && (Object.prototype.toString.call(m) === '[object Module]' || m.__esModule) && 'default' in m) m = m.default;
  if (typeof m === 'function') m = m();
  m = await m;
  process.stdout.write(process.argv[2] + JSON.stringify(m === undefined ? null : m));
})().catch((e) => { console.error((e && e.stack) || String(e)); process.exit(1); });
"#;

pub fn load(path: &Path) -> anyhow::Result<Value> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "js" | "cjs" | "mjs" => evaluate(path),
        "json" => {
            let text = read(path)?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))
        }
        "yaml" | "yml" => {
            let text = read(path)?;
            serde_saphyr::from_str(&text)
                .with_context(|| format!("{} is not valid YAML", path.display()))
        }
        _ => bail!(
            "{}: not a PM2 ecosystem file herd can read; name it .js, .cjs, .mjs, .json, .yaml or .yml",
            path.display()
        ),
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn evaluate(path: &Path) -> anyhow::Result<Value> {
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    if !abs.is_file() {
        bail!("cannot read {}: no such file", path.display());
    }
    let mut child = match Command::new("node")
        .arg("-e")
        .arg(EVALUATE)
        .arg(&abs)
        .arg(MARKER)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} is JavaScript, which needs `node` to evaluate it, and node is not on PATH: install Node.js (apt-get install nodejs), or convert the file once with `node -p 'JSON.stringify(require(\"./{}\"))' > ecosystem.json` elsewhere and import that",
            path.display(),
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        Err(e) => return Err(e).context("cannot run node"),
    };
    // Read both pipes on their own threads, so a chatty file cannot fill one and hang.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for node")? {
            break status;
        }
        if started.elapsed() > NODE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "node did not finish evaluating {} within {} s (does it start something?)",
                path.display(),
                NODE_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "node could not evaluate {} ({status}):\n{}",
            path.display(),
            err.trim_end()
        );
    }
    let Some((_, json)) = out.rsplit_once(MARKER) else {
        bail!("node printed no exports for {}", path.display());
    };
    serde_json::from_str(json).context("node's JSON of the exports does not parse")
}
