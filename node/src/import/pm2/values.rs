//! The loose value types PM2 accepts: numbers or strings, a list or one string, `"300M"`,
//! `"5s"`. `None` means the value has a type PM2 would not take either.

use serde_json::Value;

/// A string, or a number written where a string belongs.
pub fn string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One string or a list of them.
pub fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(string).collect(),
        other => string(other).map(|s| vec![s]),
    }
}

/// Arguments: a list as is, or one string split like a shell would (`"--port 3000"`).
pub fn words(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(string).collect(),
        Value::String(s) => shlex::split(s),
        Value::Number(n) => Some(vec![n.to_string()]),
        _ => None,
    }
}

/// Milliseconds: a number, or a string of digits or with a unit (`"5s"`, `"1m"`, `"500ms"`).
pub fn millis(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse().ok().or_else(|| {
                humantime::parse_duration(s)
                    .ok()
                    .map(|d| d.as_millis() as u64)
            })
        }
        _ => None,
    }
}

/// Bytes: a number, or PM2's `"200K"`, `"300M"`, `"1G"` (binary units, as PM2 reads them).
pub fn bytes(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            let (digits, unit) =
                s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: u64 = digits.parse().ok()?;
            let scale: u64 = match unit.trim().to_ascii_uppercase().as_str() {
                "" | "B" => 1,
                "K" | "KB" => 1024,
                "M" | "MB" => 1024 * 1024,
                "G" | "GB" => 1024 * 1024 * 1024,
                _ => return None,
            };
            n.checked_mul(scale)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loose_values_read_as_pm2_reads_them() {
        assert_eq!(
            words(&json!("--port 3000 'a b'")).unwrap(),
            ["--port", "3000", "a b"]
        );
        assert_eq!(words(&json!(["-v", 2])).unwrap(), ["-v", "2"]);
        assert_eq!(strings(&json!("src")).unwrap(), ["src"]);
        assert_eq!(millis(&json!(1500)), Some(1500));
        assert_eq!(millis(&json!("2000")), Some(2000));
        assert_eq!(millis(&json!("5s")), Some(5000));
        assert_eq!(millis(&json!(true)), None);
        assert_eq!(bytes(&json!("300M")), Some(300 << 20));
        assert_eq!(bytes(&json!("1G")), Some(1 << 30));
        assert_eq!(bytes(&json!("512K")), Some(512 << 10));
        assert_eq!(bytes(&json!(1048576)), Some(1 << 20));
        assert_eq!(bytes(&json!("12 parsecs")), None);
    }
}
