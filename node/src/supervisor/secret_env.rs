//! Secret references in an app's env: `DB_PASS = "secret:db/pass"`. The spec, `state.json`,
//! the registry, `herd inspect` and every reply keep the reference; the value is fetched from
//! the secret store (a [`SecretSource`]) only when an instance is spawned, and goes nowhere
//! but into that child's environment.

use super::spec::AppSpec;

/// The prefix that makes an env value a reference to a secret.
pub const PREFIX: &str = "secret:";

/// Where spawn gets clear values from (the daemon's secret store).
pub trait SecretSource: Send + Sync {
    /// The clear value of `name`, or why it cannot be had (missing, no key, wrong key).
    fn reveal(&self, name: &str) -> Result<Vec<u8>, String>;
}

/// `(variable, secret name)` for every env value of `spec` that references a secret.
pub fn references(spec: &AppSpec) -> impl Iterator<Item = (&str, &str)> {
    spec.env
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.strip_prefix(PREFIX)?)))
}

/// Whether `spec` uses the secret `name`.
pub fn uses(spec: &AppSpec, name: &str) -> bool {
    references(spec).any(|(_, n)| n == name)
}

/// The clear values of `spec`'s secret references, or the first one that fails, named.
pub fn resolve(
    spec: &AppSpec,
    source: Option<&dyn SecretSource>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (var, name) in references(spec) {
        let Some(source) = source else {
            return Err(format!(
                "env `{var}` needs secret `{name}` but this daemon has no secret store"
            ));
        };
        let value = source
            .reveal(name)
            .map_err(|e| format!("env `{var}`: {e}"))?;
        out.push((var.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct One;
    impl SecretSource for One {
        fn reveal(&self, name: &str) -> Result<Vec<u8>, String> {
            match name {
                "db/pass" => Ok(b"hunter2".to_vec()),
                _ => Err(format!("secret `{name}` does not exist")),
            }
        }
    }

    #[test]
    fn only_prefixed_values_are_references_and_a_missing_one_is_named() {
        let mut spec = AppSpec::quick("a", "true", vec![]);
        spec.env.insert("PLAIN".into(), "x".into());
        spec.env.insert("DB_PASS".into(), "secret:db/pass".into());
        assert_eq!(
            references(&spec).collect::<Vec<_>>(),
            [("DB_PASS", "db/pass")]
        );
        assert!(uses(&spec, "db/pass") && !uses(&spec, "x"));
        assert_eq!(
            resolve(&spec, Some(&One)).unwrap(),
            [("DB_PASS".to_string(), b"hunter2".to_vec())]
        );
        spec.env.insert("API".into(), "secret:api/key".into());
        let e = resolve(&spec, Some(&One)).unwrap_err();
        assert!(e.contains("`API`") && e.contains("api/key"), "{e}");
        assert!(
            resolve(&spec, None)
                .unwrap_err()
                .contains("no secret store")
        );
    }
}
